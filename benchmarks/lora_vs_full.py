"""Low-rank adapters against training the layers themselves: the built-in task, the traced layers,
the same objective and recipe, scored the official way and by held-out probe recall.

    python benchmarks/lora_vs_full.py [--objective "sha256 (alpha 3-6)"] [--layers 0,7] [--rank 8]
                                      [--lora-lr 1.5e-3,1.5e-2] [--seed 0] [--skip-original]

One row for the original model, one for full training of the layers' MLPs, one per LoRA learning
rate (the recipe's own first: the same settings). Generation up to 64 new tokens, as
unlearn_seeds.py scores; held-out recall on the demo audit's probes (one question and one cloze
prompt per person and attribute).
"""

from __future__ import annotations

import argparse
import time
from statistics import fmean

import pandas as pd
import torch

import causal_unlearn as cu
from causal_unlearn.auditing.audit import per_form
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE

from unlearn_grid import markdown
from unlearn_seeds import objective_for


def probes(world: cu.BiosWorld, split: str) -> list[cu.Probe]:
    """The audit's held-out probes (`AuditConfig(probes_per_form=1)`, as the demo asks): one question
    and one cloze prompt per person and attribute."""
    return per_form([p for p in world.probes(split) if p.form != "opening"], 1)


def scores(lm: cu.LoadedModel, world: cu.BiosWorld, task) -> dict[str, float]:
    official = cu.evaluate(lm, **task.scoring(), max_new_tokens=64, progress=False).to_dict()
    recall = {f"{split} probe recall": fmean(cu.probe_recall(lm, probes(world, split), progress=False))
              for split in ("forget", "retain")}
    return {"forget QA": official["Task2/forget_knowledge"], "retain QA": official["Task2/retain_knowledge"],
            "GK held out": official["utility"], "MIA": official["mia_score"], "final": official["final"], **recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="sha256 (alpha 3-6)")
    parser.add_argument("--layers", default="0,7")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lora-lr", default=str(BUILTIN_RECIPE["lr"]), help="comma-separated learning rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-original", action="store_true", help="do not score the original model")
    args = parser.parse_args()
    torch.manual_seed(0)
    base, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    layers = [int(x) for x in args.layers.split(",")]
    print(f"layers {layers}, objective {args.objective}, recipe {BUILTIN_RECIPE}, seed {args.seed}", flush=True)
    rows = [] if args.skip_original else [{"edit": "original", "trainable": 0, "lr": float("nan"),
                                           **scores(base, world, task), "unlearn s": 0.0}]
    if rows:
        print(markdown(pd.DataFrame(rows)), flush=True)
    runs = [("full MLPs", None, BUILTIN_RECIPE["lr"])]
    runs += [(f"LoRA r={args.rank}", cu.LoRA(rank=args.rank, alpha=2.0 * args.rank), float(lr))
             for lr in args.lora_lr.split(",")]
    for label, adapter, lr in runs:
        lm = base.copy()
        started = time.perf_counter()
        result = cu.unlearn(lm, task.forget, task.retain, layers=layers, objective=objective_for(args.objective, world, args.seed),
                            adapter=adapter, progress=False, **{**BUILTIN_RECIPE, "lr": lr, "seed": args.seed})
        seconds = time.perf_counter() - started
        trainable = result.settings["adapter"]["parameters"] if adapter else result.selection.count
        rows.append({"edit": label, "trainable": trainable, "lr": lr, **scores(lm, world, task), "unlearn s": seconds})
        print(markdown(pd.DataFrame(rows[-1:]), header=len(rows) == 1), flush=True)
    print()
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
