"""How well each fast method ranks cells like the exact trace, and at what speed.

    python benchmarks/attribution_agreement.py [--facts-per-attribute 5] [--windows 1,10]

On the built-in model's forget facts (5 per attribute: 35; samples 10; hidden, mlp, attn), every
method against the exact heatmap: mean Spearman and Pearson correlation over facts, the speed over
exact there, and on the GPT-2-small shape (`trace_speed.build`: the benchmark prompt, window 10,
each the best of two runs). The exact trace with another noise seed says how well the exact
heatmap agrees with itself: no estimate of it can rank its cells better. For the guided mode, the recall of the exact trace's 10 strongest
cells and strongest 5 % among the cells it traced exactly.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
from scipy.stats import pearsonr, spearmanr

import causal_unlearn as cu
from causal_unlearn.tracing import AttributionFixes
from trace_speed import KINDS, PROMPT, SUBJECT, build

ATP = dict(log_odds=False, qk_fix=False, steps=0)
METHODS = {  # name: trace keywords
    # the exact trace with other noise draws: how far the exact heatmap itself agrees with itself
    "exact, noise seed 1": dict(seed=1),
    "AtP": dict(method="attribution", fixes=AttributionFixes(**ATP)),
    "AtP* (qk_fix+grad_drop)": dict(method="attribution", fixes=AttributionFixes(**{**ATP, "qk_fix": True},
                                                                                   grad_drop=True)),
    "AtP + log_odds + qk_fix + steps=2": dict(method="attribution", fixes=AttributionFixes()),
    "RelP": dict(method="attribution", fixes=AttributionFixes(**ATP, relp=True)),
    "RelP + AH rule": dict(method="attribution", fixes=AttributionFixes(**ATP, relp=True, relp_attention=True)),
    "RelP + log_odds": dict(method="attribution", fixes=AttributionFixes(**{**ATP, "log_odds": True}, relp=True)),
    "RelP + log_odds + qk_fix + steps=2": dict(method="attribution", fixes=AttributionFixes(relp=True)),
    "guided (10 % exact)": dict(method="guided"),
    "guided (20 % exact)": dict(method="guided", exact_cells=0.2),
}


def strongest(effects: torch.Tensor, n: int) -> set[int]:
    return set(effects.abs().flatten().topk(n).indices.tolist())


def replacement_for(lm, fact, others: list[str]):
    """Token replacement with the first of `others` whose name is as many tokens as the subject."""
    from causal_unlearn.tracing import TokenReplacement

    length = len(lm.to_tokens(fact.subject)[0])
    other = next((name for name in others if name != fact.subject and len(lm.to_tokens(name)[0]) == length), None)
    return None if other is None else TokenReplacement(fact.prompt.replace(fact.subject, other, 1))


def agreement(facts, windows, lm, common: dict) -> dict:
    rows = {(name, window): dict(spearman={k: [] for k in KINDS}, pearson={k: [] for k in KINDS}, seconds=0.0,
                                 recall10=[], recall5=[]) for name in METHODS for window in windows}
    exact_seconds = dict.fromkeys(windows, 0.0)
    for window in windows:
        for fact in facts:
            settings = {key: value(fact) if callable(value) else value for key, value in common.items()}
            started = time.perf_counter()
            exact = cu.trace(lm, fact.prompt, fact.subject, answer=fact.answer, window=window, progress=False,
                             **settings)
            exact_seconds[window] += time.perf_counter() - started
            for name, method in METHODS.items():
                row = rows[(name, window)]
                started = time.perf_counter()
                estimate = cu.trace(lm, fact.prompt, fact.subject, answer=fact.answer, window=window, progress=False,
                                    **{**settings, **method})
                row["seconds"] += time.perf_counter() - started
                for kind in KINDS:
                    a, b = exact.scores[kind].flatten(), estimate.scores[kind].flatten()
                    row["spearman"][kind].append(float(spearmanr(a, b)[0]))
                    row["pearson"][kind].append(float(pearsonr(a, b)[0]))
                    if estimate.exact_cells:
                        chosen = set(estimate.exact_cells[kind].flatten().nonzero().flatten().tolist())
                        effects = exact.indirect_effects(kind)
                        for n, key in ((10, "recall10"), (math.ceil(0.05 * effects.numel()), "recall5")):
                            top = strongest(effects, n)
                            row[key].append(len(top & chosen) / len(top))
    return dict(rows=rows, exact_seconds=exact_seconds)


def gpt2_shape_speedups(args) -> dict[str, float]:
    lm, _ = build(12, 768)

    def timed(**settings) -> float:
        started = time.perf_counter()
        cu.trace(lm, PROMPT, SUBJECT, samples=10, window=10, progress=False, **settings)
        return time.perf_counter() - started

    timed(method="attribution")  # warm-up
    exact = min(timed() for _ in range(2))
    return {name: exact / min(timed(**settings) for _ in range(2)) for name, settings in METHODS.items()}


def mean(values) -> str:
    values = torch.tensor(values, dtype=torch.float64)
    return f"{values.nanmean():.3f}" if len(values) else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts-per-attribute", type=int, default=5)
    parser.add_argument("--windows", default="1,10")
    parser.add_argument("--no-gpt2-shape", action="store_true", help="skip the speed on the GPT-2-small shape")
    parser.add_argument("--replacement", action="store_true", help="corrupt by token replacement (the subject "
                        "swapped for a retain person's name of as many tokens; facts without one are left out)")
    parser.add_argument("--metric", default="prob", choices=["prob", "logprob"])
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    lm = cu.load_model("olmo-tiny-bios", device="cpu")
    world = cu.make_bios_world()
    facts = [f for a in sorted({f.attribute for f in world.facts})
             for f in world.facts_to_trace("forget", a)[:args.facts_per_attribute]]
    common: dict = dict(metric=args.metric)
    if args.replacement:
        others = [person.name for person in world.people_in("retain")]
        facts = [fact for fact in facts if replacement_for(lm, fact, others)]
        common["noise"] = lambda fact: replacement_for(lm, fact, others)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # multi-token answers are traced on their first token; wide windows
        measured = agreement(facts, windows, lm, common)
        speedups = {} if args.no_gpt2_shape else gpt2_shape_speedups(args)
    for window in windows:
        corruption = "token replacement" if args.replacement else "noise s3, samples 10"
        print(f"\n{len(facts)} built-in forget facts, {corruption}, metric {args.metric}, window {window}: mean "
              f"Spearman / Pearson with the "
              f"exact heatmap, speed over exact, recall of the exact top 10 / top 5 % (guided)\n")
        print("| method | hidden | mlp | attn | x exact (built-in) | x exact (GPT-2-small shape, window 10) "
              "| recall top 10 / 5 % |\n| --- | --- | --- | --- | --- | --- | --- |")
        for name in METHODS:
            row = measured["rows"][(name, window)]
            cells = [f"{mean(row['spearman'][k])} / {mean(row['pearson'][k])}" for k in KINDS]
            speed = measured["exact_seconds"][window] / row["seconds"]
            recall = f"{mean(row['recall10'])} / {mean(row['recall5'])}" if row["recall10"] else "–"
            shape = f"{speedups[name]:.1f}" if name in speedups else "–"
            print(f"| {name} | {' | '.join(cells)} | {speed:.1f} | {shape} | {recall} |")


if __name__ == "__main__":
    main()
