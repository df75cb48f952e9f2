"""Does localization make forgetting more robust, or only better on the official format?

Each objective on the traced layers and on control layer sets of the same size ("other band",
"random (seed s)", "all"), over shuffling seeds, with the built-in recipe; each edit scored the
official way and audited (`cu.audit`: held-out probes, multiple choice, relearning, int8/bf16/
4-bit NF4, linear read-out). One CSV row per run, written as it finishes; then the means per objective and
layer set, and per run whether it meets the targets of the audit issue:

    official forget QA <= 0.05, retain QA >= 0.90, GK held out >= 0.90, MIA >= 0.80,
    held-out forget recall <= 0.10, forget city multiple choice within 0.05 of chance,
    held-out retain recall within 0.05 of the original's, relearning on half the forget rows
    brings back <= 0.20 of the other half.

    python benchmarks/unlearn_audit.py --objectives stand_in --seeds 0,1,2 --out results/audit_stand_in.csv
        [--layer-sets traced,other band,random,all] [--layers 0,7] [--checks probes,precision]

To keep runs short the audit asks the first question and the first cloze prompt of each person
and attribute (600 probes per split instead of 1,800; `--all-probes` for every one); the
original model is audited once and reused (`baseline=`). One run took 4–12 minutes on one thread
(two runs side by side on 2 cores, half unlearning and half the audit; research log). Objective names as in `unlearn_seeds.py`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

import causal_unlearn as cu
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE

from unlearn_grid import localize_forget_facts, markdown
from unlearn_seeds import objective_for

CHECKS = ("probes", "choice", "relearning", "precision", "decoding")
COLUMNS = {  # CSV column -> (check, measure, split, variant, attribute)
    "probe recall forget": ("probes", "recall", "forget", "edited", "all"),
    "probe recall retain": ("probes", "recall", "retain", "edited", "all"),
    "choice forget": ("choice", "top-1", "forget", "edited", "all"),
    "choice city forget": ("choice", "top-1", "forget", "edited", "city"),
    "choice retain": ("choice", "top-1", "retain", "edited", "all"),
    "relearn half": ("relearning", "recall", "forget, held-out half", "edited, relearned", "all"),
    "relearn retain": ("relearning", "recall", "forget", "edited, relearned on retain", "all"),
    "int8 forget": ("precision", "recall", "forget", "edited, int8", "all"),
    "bf16 forget": ("precision", "recall", "forget", "edited, bf16", "all"),
    "nf4 forget": ("precision", "recall", "forget", "edited, nf4", "all"),
    "int8 retain": ("precision", "recall", "retain", "edited, int8", "all"),
    "bf16 retain": ("precision", "recall", "retain", "edited, bf16", "all"),
    "nf4 retain": ("precision", "recall", "retain", "edited, nf4", "all"),
    "decode city forget": ("decoding", "accuracy", "forget", "edited", "city"),
}
OFFICIAL = {"Task2/forget_knowledge": "forget QA", "Task2/retain_knowledge": "retain QA", "utility": "GK held out",
            "mia_score": "MIA", "final": "final"}


def audit_row(audit: cu.AuditResult, variant: str = "edited") -> dict[str, float]:
    row = {}
    for column, (check, measure, split, which, attribute) in COLUMNS.items():
        which = variant if which == "edited" else which
        try:
            row[column] = audit.value(check, measure, split, which, attribute=attribute)
        except KeyError:
            row[column] = float("nan")
    return row


def meets_targets(row: dict, original: dict) -> bool:
    return bool(row["forget QA"] <= 0.05 and row["retain QA"] >= 0.9 and row["GK held out"] >= 0.9
                and row["MIA"] >= 0.8 and row["probe recall forget"] <= 0.10
                and row["choice city forget"] <= row["city chance"] + 0.05
                and row["probe recall retain"] >= original["probe recall retain"] - 0.05
                and row["relearn half"] <= 0.20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", default="stand_in", help="comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated shuffling seeds")
    parser.add_argument("--layer-sets", default="traced,other band,random,all", help="comma-separated")
    parser.add_argument("--layers", default=None, help="the traced layers (default: trace and localize)")
    parser.add_argument("--out", default="results/unlearn_audit.csv")
    parser.add_argument("--all-probes", action="store_true", help="audit with every probe (3x slower)")
    parser.add_argument("--checks", default=",".join(CHECKS),
                        help="comma-separated audit checks (the others' columns are empty; 'meets all' needs them all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    lm, world = cu.load_model("olmo-tiny-bios", device="cpu"), cu.make_bios_world()
    task = world.unlearning_task()
    config = cu.AuditConfig(checks=tuple(args.checks.split(",")), probes_per_form=None if args.all_probes else 1)
    started = time.perf_counter()
    traced = [int(x) for x in args.layers.split(",")] if args.layers else localize_forget_facts(lm, world)
    scores_before = cu.evaluate(lm, **task.scoring(), max_new_tokens=64, progress=False).to_dict()
    baseline = cu.audit(lm, lm.copy(), task, config=config, progress=False)
    original = {**{OFFICIAL[k]: scores_before[k] for k in OFFICIAL}, **audit_row(baseline, "original")}
    original["city chance"] = (baseline.value("choice", "chance", "forget", "original", attribute="city")
                               if "choice" in config.checks else float("nan"))
    print(f"original: {json.dumps({k: round(v, 3) for k, v in original.items()})}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.objectives.split(","):
        for seed in [int(x) for x in args.seeds.split(",")]:
            sets = cu.control_layer_sets(traced, lm.n_layers, seeds=(seed,))
            sets = {k: v for k, v in sets.items() if k.split(" (")[0] in args.layer_sets.split(",")}
            for layer_set, layers in sets.items():
                result = cu.unlearn(lm, task.forget, task.retain, layers=layers, objective=objective_for(name, world, seed),
                                    progress=False, **{**BUILTIN_RECIPE, "seed": seed})
                edited = result.edited_model()
                result.revert()
                scores = cu.evaluate(edited, **task.scoring(), max_new_tokens=64, progress=False).to_dict()
                audit = cu.audit(lm, edited, task, config=config, baseline=baseline, progress=False)
                row = dict(objective=name, layer_set=layer_set.split(" (")[0], layers=str(layers), seed=seed,
                           **{OFFICIAL[k]: scores[k] for k in OFFICIAL}, **audit_row(audit),
                           **{"city chance": original["city chance"], "unlearn s": result.seconds,
                              "audit s": sum(audit.seconds.values())})
                row["meets all"] = meets_targets(row, original)
                rows.append(row)
                pd.DataFrame(rows).to_csv(out, index=False)
                print(markdown(pd.DataFrame(rows[-1:]), header=len(rows) == 1), flush=True)
                del edited
    frame = pd.DataFrame(rows)
    numbers = [c for c in frame.columns if c not in ("objective", "layer_set", "layers", "seed", "meets all")]
    summary = frame.groupby(["objective", "layer_set"], sort=False).agg(
        {**{c: "mean" for c in numbers}, "meets all": "sum", "seed": "count"}).reset_index()
    print("\nmeans over seeds (meets all: runs meeting every target; seed: runs)\n")
    print(markdown(summary))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
