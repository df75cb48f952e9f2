"""Does localization make forgetting more robust, or only better on the official format? And does
editing the fact (neurons, heads, adapters, a closed-form update) keep the retain people better
than editing whole layers?

Each method on the traced layers and on control layer sets of the same size ("other band",
"random (seed s)", "all"), over shuffling seeds, with the built-in recipe; each edit scored the
official way and audited (`cu.audit`: held-out probes, multiple choice, relearning, int8/bf16/
4-bit NF4, linear read-out, the bios' own openings, the logit lens and the probability delta).
One CSV row per run, written as it finishes; then the means per method and layer set, and per
run whether it meets the targets of the audit issue ("meets all"):

    official forget QA <= 0.05, retain QA >= 0.90, GK held out >= 0.90, MIA >= 0.80,
    held-out forget recall <= 0.10, forget city multiple choice within 0.05 of chance,
    held-out retain recall within 0.05 of the original's, relearning on half the forget rows
    brings back <= 0.20 of the other half;

and those of the fact-editing issue ("meets 33"):

    held-out forget recall <= 0.10, bio-opening forget recall <= 0.10, relearning <= 0.20, the logit
    lens' top-1 rate on forget people within 0.10 of the holdout people's, held-out retain recall
    within 0.05 of the original's, official retain QA >= 0.95.

    python benchmarks/unlearn_audit.py --methods stand_in --seeds 0,1,2 --out results/audit_stand_in.csv
        [--layer-sets traced,other band,random,all] [--layers 0,7] [--checks probes,precision]
        [--unit-effects results/unit_effects] [--epochs 5]

Methods are objective names (as in `unlearn_seeds.py`, whole MLPs), "OBJECTIVE neurons K [specific | per site]",
"OBJECTIVE heads K [...]", "OBJECTIVE lora R" and "closed-form" (see `edit`); the neurons and
heads come from an attribution trace of the 350 forget (and retain) facts (`UnitEffects`).

To keep runs short the audit asks the first question and the first cloze prompt of each person
and attribute (600 probes per split instead of 1,800; `--all-probes` for every one); the
original model is audited once and reused (`baseline=`). One run took 4–12 minutes on one thread
(two runs side by side on 2 cores, half unlearning and half the audit; research log).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import time
from pathlib import Path

import pandas as pd
import torch

import causal_unlearn as cu
from causal_unlearn.unlearning.recipes import BUILTIN_RECIPE

from unlearn_grid import localize_forget_facts, markdown
from unlearn_seeds import objective_for

CHECKS = ("probes", "choice", "relearning", "precision", "decoding", "bio_openings", "head_projection",
          "probability_delta")
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
    "opening recall forget": ("bio_openings", "recall", "forget", "edited", "all"),
    "opening recall retain": ("bio_openings", "recall", "retain", "edited", "all"),
    "lens forget": ("head_projection", "top-1", "forget", "edited", "all"),
    "lens retain": ("head_projection", "top-1", "retain", "edited", "all"),
    "lens holdout": ("head_projection", "top-1", "holdout", "edited", "all"),
    "delta forget": ("probability_delta", "top-1 rise", "forget", "edited", "all"),
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


def meets_fact_targets(row: dict, original: dict) -> bool:
    """The target of the fact-editing issue (33): forgotten by held-out probes, the bios' own openings,
    relearning and the logit lens (within 0.10 of people never known), retain people kept."""
    return bool(row["probe recall forget"] <= 0.10 and row["opening recall forget"] <= 0.10
                and row["relearn half"] <= 0.20 and row["lens forget"] <= row["lens holdout"] + 0.10
                and row["probe recall retain"] >= original["probe recall retain"] - 0.05
                and row["retain QA"] >= 0.95)


FINER = re.compile(r"^(?P<objective>.+) (?P<kind>neurons|heads|lora) (?P<size>\d+)(?P<how> specific| per site)?$")
CLOSED_FORM = "closed-form"
LORA_LR = 5e-3  # between the two learning rates the LoRA table measured (1.5e-3 forgot too little, 1.5e-2 cost GK)


class UnitEffects:
    """Mean neuron and head effects of each split's facts (`cu.average_effects` of an attribution
    trace: about 70 s a split on one thread), traced once with the noise of a fresh process
    (`torch.manual_seed(0)`) and kept in `folder` (forget.pt, retain.pt) when one is given."""

    def __init__(self, lm: cu.LoadedModel, world: cu.BiosWorld, folder: str | None):
        self.lm, self.world, self.folder, self.effects = lm, world, Path(folder) if folder else None, {}

    def __getitem__(self, split: str) -> cu.AveragedEffects:
        if split not in self.effects:
            path = self.folder / f"{split}.pt" if self.folder else None
            self.effects[split] = torch.load(path, weights_only=False) if path and path.exists() else self._trace(split)
            if path and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(self.effects[split], path)
        return self.effects[split]

    def _trace(self, split: str) -> cu.AveragedEffects:
        rng = torch.random.get_rng_state()  # the runs' own randomness goes on as if nothing was traced
        torch.manual_seed(0)
        traces = cu.trace_facts(self.lm, self.world.facts_to_trace(split), kinds=("neuron", "head"),
                                method="attribution", progress=False)
        torch.random.set_rng_state(rng)
        return cu.average_effects(traces)

    def ranking(self, specific: bool) -> cu.AveragedEffects:
        """The forget facts' mean effects per unit, or with `specific` those less the retain facts'."""
        forget = self["forget"]
        if not specific:
            return forget
        return dataclasses.replace(forget, mean={kind: mean - self["retain"].mean[kind]
                                                 for kind, mean in forget.mean.items()})


def per_site(effects: cu.AveragedEffects, kind: str, top_k: int, layers: list[int]) -> cu.Components:
    """The `top_k` units of each layer, each in the token group where its units' summed effect is largest."""
    parts = {}
    for layer in layers:
        sums = effects.mean[kind][:, layer].flatten(1).nan_to_num().sum(-1)
        group = effects.groups[int(sums.argmax())]
        parts.update(getattr(cu.localize_components(effects, kind=kind, top_k=top_k, token_group=group, layers=[layer]),
                             f"{kind}s"))
    return cu.Components(**{f"{kind}s": parts})


def edit(method: str, lm: cu.LoadedModel, world: cu.BiosWorld, task: cu.UnlearningTask, layers: list[int], seed: int,
         unit_effects: UnitEffects,
         epochs: int | None = None) -> tuple[cu.UnlearnResult, list[int] | cu.Components]:
    """Apply `method` to the layer set (returns the result and what it edited):

    - an objective name: train the whole MLPs of `layers` (the built-in recipe);
    - "OBJECTIVE neurons K" / "OBJECTIVE heads K": only the K neurons / heads of `layers` with the
      largest traced effect at the last subject token (`UnitEffects`); with " specific" appended,
      the largest effect on forget facts less that on retain facts; with " per site", K of each
      layer, in the token group where that layer's units matter most (layer 7: the last token);
    - "OBJECTIVE lora R": rank-R adapters on the MLPs of `layers`, lr LORA_LR;
    - "closed-form": `delete_facts` of the 350 forget facts, stand-in target, lambda 300, on `layers`
      less the final layer (which it refuses).
    """
    if method == CLOSED_FORM:
        kept = [layer for layer in layers if layer < lm.n_layers - 1]
        result = cu.delete_facts(lm, world.facts_to_trace("forget"), kept,
                                 covariance_text=[*task.retain, *world.documents("retain")], target="stand_in",
                                 stand_ins=world.stand_in_names(seed=seed + 1), mom2_weight=300.0, progress=False)
        return result, kept
    finer = FINER.match(method)
    name = finer["objective"] if finer else method
    settings = {**BUILTIN_RECIPE, "seed": seed, **({"epochs": epochs} if epochs else {})}
    where: list[int] | cu.Components = layers
    if finer and finer["kind"] == "lora":
        settings.update(adapter=cu.LoRA(rank=int(finer["size"]), alpha=2.0 * int(finer["size"])), lr=LORA_LR)
    elif finer and finer["how"] == " per site":
        where = per_site(unit_effects["forget"], finer["kind"][:-1], int(finer["size"]), layers)
    elif finer:
        where = cu.localize_components(unit_effects.ranking(finer["how"] == " specific"),
                                       kind=finer["kind"][:-1], top_k=int(finer["size"]), layers=layers)
    result = cu.unlearn(lm, task.forget, task.retain, layers=where, objective=objective_for(name, world, seed),
                        progress=False, **settings)
    return result, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", "--objectives", default="stand_in",
                        help="comma-separated: objective names, 'OBJECTIVE neurons|heads K', 'OBJECTIVE lora R', "
                             f"{CLOSED_FORM!r} (see edit())")
    parser.add_argument("--unit-effects", default=None,
                        help="a folder to keep the neuron and head traces of finer edits in (traced when absent)")
    parser.add_argument("--epochs", type=int, default=None, help="instead of the built-in recipe's 10 (trained edits)")
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
    unit_effects = UnitEffects(lm, world, args.unit_effects)
    for name in args.methods.split(","):
        for seed in [int(x) for x in args.seeds.split(",")]:
            sets = cu.control_layer_sets(traced, lm.n_layers, seeds=(seed,))
            sets = {k: v for k, v in sets.items() if k.split(" (")[0] in args.layer_sets.split(",")}
            for layer_set, layers in sets.items():
                result, edited_where = edit(name, lm, world, task, layers, seed, unit_effects, args.epochs)
                edited = result.edited_model()
                result.revert()
                scores = cu.evaluate(edited, **task.scoring(), max_new_tokens=64, progress=False).to_dict()
                audit = cu.audit(lm, edited, task, config=config, baseline=baseline, progress=False)
                trained_for = f" ({args.epochs} epochs)" if args.epochs and name != CLOSED_FORM else ""
                row = dict(method=name + trained_for,
                           layer_set=layer_set.split(" (")[0], layers=str(layers), seed=seed,
                           **{OFFICIAL[k]: scores[k] for k in OFFICIAL}, **audit_row(audit),
                           **{"city chance": original["city chance"], "edit s": result.seconds,
                              "audit s": sum(audit.seconds.values())})
                row["meets all"] = meets_targets(row, original)
                row["meets 33"] = meets_fact_targets(row, original)
                row["edited"] = json.dumps(edited_where.to_dict() if isinstance(edited_where, cu.Components)
                                           else edited_where)
                rows.append(row)
                pd.DataFrame(rows).to_csv(out, index=False)
                print(markdown(pd.DataFrame(rows[-1:]), header=len(rows) == 1), flush=True)
                del edited
    frame = pd.DataFrame(rows)
    numbers = [c for c in frame.columns if c not in ("method", "layer_set", "layers", "seed", "meets all", "meets 33",
                                                     "edited")]
    summary = frame.groupby(["method", "layer_set"], sort=False).agg(
        {**{c: "mean" for c in numbers}, "meets all": "sum", "meets 33": "sum", "seed": "count"}).reset_index()
    print("\nmeans over seeds (meets all: runs meeting every target; seed: runs)\n")
    print(markdown(summary))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
