"""Every objective on the traced layers of the built-in model, scored three ways: the official
SemEval-2025 Task 4 scores, TOFU's metrics and the six membership-inference attacks.

    python benchmarks/objectives_metrics.py [--objectives npo,rmu] [--out results/objectives_metrics.csv]

Traces the forget facts (MLP, window 1), localizes as the demo does, and for each objective runs
`unlearn` with the built-in recipe on those layers, then `evaluate(..., membership=MIAConfig())`
(forget rows as members, holdout rows as non-members: open-unlearning's convention, AUC 0.5 =
indistinguishable) and TOFU's metrics on `world.tofu_rows`. The built-in world has no model
trained without the forget people, so forget quality takes as its reference the original model's
truth ratios on the holdout people (people it never saw); the `reference` attack is left out
for the same reason. Each run is reverted before the next.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

import causal_unlearn as cu
from causal_unlearn.evaluation import tofu
from causal_unlearn.unlearning import OBJECTIVES, StandIn
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE, builtin_sha256
from unlearn_grid import localize_forget_facts, markdown

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm")


def scores(lm: cu.LoadedModel, world: cu.BiosWorld, task, reference: list[float]) -> dict[str, float]:
    """The official scores, the MIA AUCs and TOFU's metrics of the model as it is now."""
    official = cu.evaluate(lm, **task.scoring(), membership=cu.MIAConfig(attacks=ATTACKS), max_new_tokens=64,
                           progress=False).to_dict()
    forget, retain = world.tofu_rows("forget"), world.tofu_rows("retain")
    utility = tofu.model_utility(lm, retain, world_facts=world.tofu_rows("general_knowledge"), progress=False)
    return {
        "forget QA": official["Task2/forget_knowledge"], "forget SC": official["Task2/forget_regurgitation"],
        "retain QA": official["Task2/retain_knowledge"], "retain SC": official["Task2/retain_regurgitation"],
        "task aggregate": official["task_aggregate"], "final": official["final"],
        **{f"AUC {attack}": official[f"mia_auc/{attack}"] for attack in ATTACKS},
        "forget prob": tofu.probability(lm, forget, progress=False).value,
        "forget truth ratio": tofu.truth_ratio(lm, forget, progress=False).value,
        "forget quality": tofu.forget_quality(lm, forget, reference, progress=False).value,
        "extraction strength": tofu.extraction_strength(lm, forget, progress=False).value,
        "model utility": utility.value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default=",".join([*OBJECTIVES, StandIn.name]),
                        help="comma-separated objective names (sha256 runs with the built-in recipe's constants)")
    parser.add_argument("--samples", type=int, default=3, help="noise samples per traced fact")
    parser.add_argument("--out", default=None, help="also write the table as CSV")
    args = parser.parse_args()
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    layers = localize_forget_facts(lm, world, samples=args.samples).layers
    reference = tofu.truth_ratio(lm, world.tofu_rows("holdout"), progress=False).values
    rows = [{"objective": "none (original)", "unlearn s": 0.0, **scores(lm, world, task, reference)}]
    print(markdown(pd.DataFrame(rows)), flush=True)
    for name in args.objectives.split(","):
        objective = {"sha256": builtin_sha256(), StandIn.name: StandIn(world.stand_ins())}.get(name, name)
        started = time.perf_counter()
        result = cu.unlearn(lm, task.forget, task.retain, layers=layers, objective=objective, progress=False,
                            **BUILTIN_RECIPE)
        seconds = time.perf_counter() - started
        try:
            rows.append({"objective": result.objective.label, "unlearn s": seconds,
                         **scores(lm, world, task, reference)})
        finally:
            result.revert()
        print(markdown(pd.DataFrame(rows[-1:]), header=False), flush=True)
        if args.out:
            pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"\nlayers {layers}, recipe {BUILTIN_RECIPE}")


if __name__ == "__main__":
    main()
