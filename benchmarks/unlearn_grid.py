"""The ablation the paper did not run: every objective on the traced layers and on control
layer sets of the same size, on the built-in model, scored the official way.

    python benchmarks/unlearn_grid.py [--objectives sha256,npo] [--seeds 2] [--out grid.csv]

Traces the forget set's facts (window 1), localizes with `localize(kind="mlp")`, builds the
control sets with `control_layer_sets`, and runs `compare_layer_sets` on the built-in unlearning task
(`world.unlearning_task()`) with the built-in recipe. Besides the named objectives (paper
constants) it runs SHA256 with the built-in recipe's retain weight, "sha256 (alpha 3-6)", and
`stand_in` with the world's stand-in prompts.
`results/unlearn_grid.csv` holds the last full run (notebook 03 plots it with `viz.plot_layer_sets`).
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

COLUMNS = {"objective": "objective", "layer_set": "layer set", "layers": "layers", "trainable": "trainable",
           **SCORE_LABELS, "seconds": "unlearn s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default=",".join([*OBJECTIVES, StandIn.name]),
                        help="comma-separated objective names")
    parser.add_argument("--seeds", type=int, default=2, help="random layer sets")
    parser.add_argument("--samples", type=int, default=3, help="noise samples per traced fact")
    parser.add_argument("--no-tuned", action="store_true", help="leave out 'sha256 (alpha 3-6)'")
    parser.add_argument("--out", default=None, help="also write the table as CSV")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    started = time.perf_counter()
    traced = localize_forget_facts(lm, world, samples=args.samples)
    sets = cu.control_layer_sets(traced, lm.n_layers, seeds=range(args.seeds))
    print("layer sets:", sets)
    task = world.unlearning_task()
    named = [StandIn(world.stand_ins()) if name == StandIn.name else name for name in args.objectives.split(",")]
    objectives = [*([] if args.no_tuned else [builtin_sha256()]), *named]
    print(f"recipe: {BUILTIN_RECIPE}\n", flush=True)
    tables = []
    # one objective at a time, so a long grid shows (and saves) its rows as they come
    for index, objective in enumerate(objectives):
        table = cu.compare_layer_sets(lm, objectives=[objective], layer_sets=sets, max_new_tokens=64, include_original=index == 0,
                           progress=False, **task.scoring(), **BUILTIN_RECIPE)
        tables.append(table[list(COLUMNS)].rename(columns=COLUMNS))
        print(markdown(tables[-1], header=index == 0), flush=True)
        if args.out:
            pd.concat(tables).to_csv(args.out, index=False)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def localize_forget_facts(lm: cu.LoadedModel, world: cu.BiosWorld, samples: int = 3) -> cu.Localization:
    """Trace the MLP effect (window 1) of the world's forget facts, localize, and say what was found."""
    started = time.perf_counter()
    traces = cu.trace_facts(lm, world.facts_to_trace("forget"), kinds=("mlp",), window=1, samples=samples)
    traced = cu.localize(traces, kind="mlp")
    print(f"traced {len(traces)} forget facts in {time.perf_counter() - started:.0f} s; localized MLP layers "
          f"{traced.layers} ({traced.rule}); effect by layer: {[round(v, 3) for v in traced.effect.tolist()]}")
    return traced


def markdown(table, header: bool = True) -> str:
    """Pipe-table rows of the frame, numbers to 3 decimals (what the docs show)."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)] if header else []
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
