"""Closed-form deletion (MEMIT's edit with a deleting target) on the built-in model, scored the
official way and by held-out probe recall.

    python benchmarks/closed_form.py [--targets stand_in,max_entropy] [--layer-sets "0;0,1,2"]
                                     [--mom2-weights 300,1000,3000] [--max-new-tokens 256] [--out rows.csv]

Deletes the 350 forget facts of the built-in world (`world.facts_to_trace("forget")`: 50 people,
7 facts each) at the subject's last token of the given layers, with the retain rows (general
knowledge included) and the retain people's bios as covariance text. For each setting: the mean
p(answer) at the traced prompts (forget and retain people), the official scores
(`cu.evaluate` on `world.unlearning_task()`), held-out probe recall (`world.probes`) per split,
and the time of the edit. The first row is the original model.

    python benchmarks/closed_form.py --ceiling 0

prints instead what the site allows at all: p(answer) per attribute when the hidden state after
block 0 at the subject's last token is replaced by the stand-in's in the same prompt (no edit).
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd
import torch

import causal_unlearn as cu
from causal_unlearn.tracing.tokens import answer_token_id
from causal_unlearn.unlearning.closed_form import delete_facts


@torch.no_grad()
def answer_probability(lm: cu.LoadedModel, facts: list[cu.TraceFact]) -> float:
    """Mean p(first answer token) at the end of each fact's prompt."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-token answers: the first token is the one traced
        answers = [answer_token_id(lm, fact.prompt, fact.answer) for fact in facts]
    probabilities = [lm.next_token_logits(lm.to_tokens(fact.prompt)).softmax(-1)[0, answer].item()
                     for fact, answer in zip(facts, answers)]
    return sum(probabilities) / len(probabilities)


def measure(lm: cu.LoadedModel, world: cu.BiosWorld, task: cu.UnlearningTask, max_new_tokens: int) -> dict:
    scores = cu.evaluate(lm, **task.scoring(), max_new_tokens=max_new_tokens, progress=False).to_dict()
    recall = {split: cu.probe_recall(lm, world.probes(split), progress=False) for split in ("forget", "retain")}
    return dict(
        p_forget=answer_probability(lm, world.facts_to_trace("forget")),
        p_retain=answer_probability(lm, world.facts_to_trace("retain")),
        forget_qa=scores["Task2/forget_knowledge"], retain_qa=scores["Task2/retain_knowledge"],
        forget_sc=scores["Task2/forget_regurgitation"], retain_sc=scores["Task2/retain_regurgitation"],
        gk_retain=scores["GeneralKnowledge/retain_knowledge"], utility=scores["utility"], mia=scores["mia_score"],
        aggregate=scores["task_aggregate"], final=scores["final"],
        probes_forget=sum(recall["forget"]) / len(recall["forget"]),
        probes_retain=sum(recall["retain"]) / len(recall["retain"]),
    )


@torch.no_grad()
def site_ceiling(lm: cu.LoadedModel, world: cu.BiosWorld, layer: int) -> dict[str, float]:
    """Mean p(answer) per attribute with the subject's last-token state after block `layer`
    replaced by the stand-in's (the stand-in's name swapped into the same prompt)."""
    from causal_unlearn.models.hooks import patch, record
    from causal_unlearn.tracing.tokens import subject_token_range

    names, point, found = world.stand_in_names(), lm.architecture.block_output(layer), {}
    for fact in world.facts_to_trace("forget"):
        stand_in = names[fact.subject]
        other = fact.prompt.replace(fact.subject, stand_in)
        with record(lm.model, [point]) as seen:
            lm.model(lm.to_tokens(other))
        state = seen[point][0, subject_token_range(lm, other, stand_in)[1] - 1]
        with patch(lm.model, point, state, position=subject_token_range(lm, fact.prompt, fact.subject)[1] - 1):
            found.setdefault(fact.attribute, []).append(answer_probability(lm, [fact]))
    return {attribute: sum(ps) / len(ps) for attribute, ps in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="stand_in,max_entropy")
    parser.add_argument("--layer-sets", default="0;0,1,2", help="semicolon-separated comma-separated layers")
    parser.add_argument("--mom2-weights", default="1000", help="comma-separated values of lambda")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="of the official scores (the grid's 64)")
    parser.add_argument("--no-original", action="store_true", help="leave out the original model's row")
    parser.add_argument("--out", default=None, help="also write the table as CSV")
    parser.add_argument("--ceiling", type=int, default=None, help="only measure the site's ceiling at this layer")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    if args.ceiling is not None:
        ceiling = site_ceiling(lm, world, args.ceiling)
        print({k: round(v, 3) for k, v in ceiling.items()}, "mean", round(sum(ceiling.values()) / len(ceiling), 3))
        return
    task = world.unlearning_task()
    facts = world.facts_to_trace("forget")
    text = [*task.retain, *world.documents("retain")]
    rows = []

    def report(row: dict) -> None:
        rows.append(row)
        print(" | ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        if args.out:
            pd.DataFrame(rows).to_csv(args.out, index=False)

    if not args.no_original:
        report(dict(target="none", layers="", mom2_weight=float("nan"), seconds=0.0,
                    **measure(lm, world, task, args.max_new_tokens)))
    for target in args.targets.split(","):
        for layers in args.layer_sets.split(";"):
            for weight in map(float, args.mom2_weights.split(",")):
                started = time.perf_counter()
                result = delete_facts(lm, facts, [int(layer) for layer in layers.split(",")], covariance_text=text,
                                      target=target, stand_ins=world.stand_in_names(), mom2_weight=weight,
                                      progress=False)
                seconds = time.perf_counter() - started
                try:
                    report(dict(target=target, layers=layers, mom2_weight=weight, seconds=seconds,
                                **measure(lm, world, task, args.max_new_tokens)))
                finally:
                    result.revert()


if __name__ == "__main__":
    main()
