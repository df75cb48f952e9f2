"""Issue 4's acceptance check over shuffling seeds: each objective with the built-in recipe on
the traced layers, scored the official way, one row per seed, then the mean and how many seeds
meet all four targets (forget QA <= 0.05, retain QA >= 0.9, GK held out >= 0.9 x before,
MIA >= 0.8).

    python benchmarks/unlearn_seeds.py [--objectives "sha256 (alpha 3-6),stand_in"] [--seeds 0,1,2,3,4]
                                       [--layers 0,7]

One run is about 100 s with 2 threads. Without `--layers` it first traces the forget facts and
localizes, as `unlearn_grid.py` does. Seed k shuffles the rows with k and, for `stand_in`, draws
the stand-in names with k + 1. Why seeds: on 47 general-knowledge questions one answer is 0.021,
and the shuffling seed alone moves a run's GK by up to 0.1 (docs/unlearning.md).
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

import causal_unlearn as cu
from causal_unlearn.unlearning import OBJECTIVES, StandIn
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE, builtin_sha256
from causal_unlearn.viz import SCORE_LABELS

from unlearn_grid import localize_forget_facts, markdown

TUNED_SHA256 = builtin_sha256().label
SHOWN = ["Task2/forget_knowledge", "Task2/retain_knowledge", "utility", "mia_score", "final"]


def meets_targets(scores: pd.Series, gk_before: float) -> bool:
    return bool(scores["Task2/forget_knowledge"] <= 0.05 and scores["Task2/retain_knowledge"] >= 0.9
                and scores["utility"] >= 0.9 * gk_before and scores["mia_score"] >= 0.8)


def objective_for(name: str, world: cu.BiosWorld, seed: int):
    if name == TUNED_SHA256:
        return builtin_sha256()
    if name == StandIn.name:
        return StandIn(world.stand_ins(seed=seed + 1))
    if name not in OBJECTIVES:
        raise SystemExit(f"unknown objective {name!r}; use {TUNED_SHA256!r}, {StandIn.name!r} or one of {sorted(OBJECTIVES)}")
    return name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default=f"{TUNED_SHA256},{StandIn.name}", help="comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated shuffling seeds")
    parser.add_argument("--layers", default=None, help="comma-separated layers (default: trace and localize)")
    args = parser.parse_args()
    torch.manual_seed(0)  # the trace's noise, as unlearn_grid.py draws it
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    started = time.perf_counter()
    layers = [int(x) for x in args.layers.split(",")] if args.layers else localize_forget_facts(lm, world).layers
    print(f"layers {layers}; recipe {BUILTIN_RECIPE}", flush=True)
    seeds = [int(x) for x in args.seeds.split(",")]
    runs, gk_before = [], None
    for name in args.objectives.split(","):
        for seed in seeds:
            table = cu.compare_layer_sets(lm, objectives=[objective_for(name, world, seed)], layer_sets={"traced": layers},
                               include_original=gk_before is None, max_new_tokens=64, progress=False,
                               **task.scoring(), **{**BUILTIN_RECIPE, "seed": seed})
            if gk_before is None:
                gk_before = float(table["utility"].iloc[0])
            row = table.iloc[-1]
            runs.append({"objective": name, "seed": seed, **{key: float(row[key]) for key in SHOWN},
                         "meets all four": meets_targets(row, gk_before), "unlearn s": float(row["seconds"])})
            print(markdown(pd.DataFrame(runs[-1:]).rename(columns=SCORE_LABELS), header=len(runs) == 1), flush=True)
    frame = pd.DataFrame(runs)
    summary = frame.groupby("objective", sort=False).agg(
        {**{key: "mean" for key in SHOWN}, "meets all four": "sum", "unlearn s": "mean"}).reset_index()
    summary["meets all four"] = [f"{int(n)} of {len(seeds)}" for n in summary["meets all four"]]
    print(f"\nmeans over seeds {seeds} (GK before: {gk_before:.3f})\n")
    print(markdown(summary.rename(columns=SCORE_LABELS)))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
