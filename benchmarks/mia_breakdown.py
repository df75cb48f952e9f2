"""Where membership inference still sees the forget set: the question or the answer tokens.

    python benchmarks/mia_breakdown.py [--runs sha256/output,sha256/distinct,stand_in/output] [--epochs 10]

The official MIA ranks each row's mean token loss over its whole text. This script splits that
loss into the question's tokens and the answer's tokens and gives the AUC of each (members: the
forget rows; non-members: the holdout rows, never trained on), before unlearning and after the
built-in recipe (layers 0 and 7) with each objective / `loss_on` pair ("sha256" is the recipe's
SHA256, alpha 3-6). AUC 0.5 is what a perfect unlearner leaves.
"""

from __future__ import annotations

import argparse
import json

import torch
from sklearn.metrics import roc_auc_score

import causal_unlearn as cu
from causal_unlearn.data.encoding import encode_continuations
from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.likelihood import target_logprobs
from causal_unlearn.unlearning.objectives import StandIn
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE, builtin_sha256


@torch.no_grad()
def mean_nll_by_part(lm: cu.LoadedModel, rows: list[Row]) -> dict[str, torch.Tensor]:
    """Each row's mean token loss over its question tokens, its answer tokens and both."""
    batch = encode_continuations(lm.tokenizer, [r.input for r in rows], [r.output for r in rows])
    nll = -target_logprobs(lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                           batch.input_ids)
    scored = batch.attention_mask.bool()
    scored[:, 0] = False  # the first token has no prediction
    parts = {"question": scored & ~batch.target_mask, "answer": batch.target_mask, "whole row": scored}
    return {name: (nll * mask).sum(1) / mask.sum(1) for name, mask in parts.items()}


def breakdown(lm: cu.LoadedModel, task) -> dict[str, dict[str, float]]:
    members, nonmembers = mean_nll_by_part(lm, task.members), mean_nll_by_part(lm, task.nonmembers)
    labels = [1] * len(task.members) + [0] * len(task.nonmembers)
    return {
        part: dict(auc=roc_auc_score(labels, (-torch.cat([members[part], nonmembers[part]])).tolist()),
                   member_nll=members[part].mean().item(), nonmember_nll=nonmembers[part].mean().item())
        for part in members
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="sha256/output,sha256/distinct,stand_in/output",
                        help="comma-separated objective/loss_on pairs (objectives: sha256, stand_in)")
    parser.add_argument("--epochs", type=int, default=BUILTIN_RECIPE["epochs"])
    args = parser.parse_args()
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    objectives = {"sha256": builtin_sha256, "stand_in": lambda: StandIn(world.stand_ins())}
    rows = {"before": breakdown(lm, task)}
    for run in args.runs.split(","):
        name, loss_on = run.split("/")
        result = cu.unlearn(lm, task.forget, task.retain, layers=[0, 7], objective=objectives[name](), loss_on=loss_on,
                            progress=False, **{**BUILTIN_RECIPE, "epochs": args.epochs})
        rows[f"{name}, loss_on={loss_on!r}"] = breakdown(lm, task)
        result.revert()
    print(f"\nmembership inference by part of the row, built-in task ({len(task.members)} members, "
          f"{len(task.nonmembers)} non-members); mean token loss in nats\n")
    print(f"{'model':<30}{'part':<12}{'AUC':>7}{'member NLL':>12}{'non-member NLL':>16}")
    for model, parts in rows.items():
        for part, values in parts.items():
            print(f"{model:<30}{part:<12}{values['auc']:>7.3f}{values['member_nll']:>12.2f}{values['nonmember_nll']:>16.2f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
