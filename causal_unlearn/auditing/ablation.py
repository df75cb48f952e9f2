"""`compare_layer_sets`: was the traced choice of layers the right one? Every objective on the traced
layers and on control layer sets of the same size, scored the official way."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from tqdm.auto import tqdm

from causal_unlearn.data.rows import Row
from causal_unlearn.evaluation.semeval import Utility, evaluate
from causal_unlearn.localization.layers import Localization
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.models.weights import editing
from causal_unlearn.unlearning.loop import unlearn
from causal_unlearn.unlearning.objectives import Objective
from causal_unlearn.unlearning.parameters import check_layers

if TYPE_CHECKING:
    from causal_unlearn.auditing.audit import AuditConfig
    from causal_unlearn.data.bios import UnlearningTask


def control_layer_sets(
    traced: Localization | Sequence[int], n_layers: int, *, seeds: Sequence[int] = (0, 1, 2)
) -> dict[str, list[int]]:
    """The traced layers and their controls, all of the traced set's size: "other band" (the
    contiguous band that overlaps the traced layers least and, among those, has the weakest
    traced effect when a `Localization` is given), "random (seed s)" (drawn from all layers)
    and "all" layers.

    Examples:
        >>> control_layer_sets([0, 1], 8, seeds=(0,))
        {'traced': [0, 1], 'other band': [2, 3], 'random (seed 0)': [6, 7], 'all': [0, 1, 2, 3, 4, 5, 6, 7]}
    """
    layers = check_layers(traced, n_layers)
    size = len(layers)
    effect = traced.effect.tolist() if isinstance(traced, Localization) else [0.0] * n_layers
    bands = [list(range(start, start + size)) for start in range(n_layers - size + 1)]
    other = min(bands, key=lambda band: (len(set(band) & set(layers)), sum(effect[layer] for layer in band), band[0]))
    sets = {"traced": layers, "other band": other}
    sets.update({f"random (seed {seed})": sorted(random.Random(seed).sample(range(n_layers), size)) for seed in seeds})
    sets["all"] = list(range(n_layers))
    return sets


def compare_layer_sets(
    model: LoadedModel,
    forget: Sequence[Row],
    retain: Sequence[Row],
    *,
    objectives: Sequence[str | Objective] = ("sha256",),
    layer_sets: Mapping[str, Sequence[int]],
    members: Sequence[Row | str] | None = None,
    nonmembers: Sequence[Row | str] | None = None,
    utility: Utility = None,
    include_original: bool = True,
    max_new_tokens: int = 256,
    audit: "UnlearningTask | None" = None,
    audit_config: "AuditConfig | None" = None,
    progress: bool = True,
    **unlearn_settings: Any,
):
    """Unlearn with each objective on each layer set, score each edited model with `evaluate`,
    and restore the original weights after each run. Returns a pandas DataFrame with one row per
    run (and one for the original model): the layers, the trainable-parameter count and share,
    the official scores, and the run's time. With `audit=task` (an `UnlearningTask` with
    probes), each edit is also audited (`cu.audit`, `audit_config`) and every number of
    `AuditResult.summary()` is a column; the original is audited once.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> table = cu.compare_layer_sets(lm, world.forget[:6], world.retain[:6], objectives=["grad_diff"],
        ...                    layer_sets={"first": [0], "last": [7]}, epochs=1, lr=1e-3, batch_size=4, grad_accum=1,
        ...                    max_new_tokens=16, progress=False)
        >>> list(table.layer_set), int(table.trainable.iloc[1])
        (['original', 'first', 'last'], 196608)
    """
    if not objectives:
        raise ValueError("no objectives to compare")
    if not layer_sets:
        raise ValueError("no layer sets to compare; see causal_unlearn.control_layer_sets")
    score = dict(members=members, nonmembers=nonmembers, utility=utility, max_new_tokens=max_new_tokens, progress=False)
    audited = _Auditor(model, audit, audit_config) if audit is not None else None
    records = []
    if include_original:
        records.append(dict(objective="none", layer_set="original", layers=[], trainable=0, share=0.0, seconds=0.0,
                            **evaluate(model, forget, retain, **score).to_dict(),
                            **(audited.original_summary() if audited else {})))
    runs = [(objective, name, layers) for objective in objectives for name, layers in layer_sets.items()]
    # each run reverts its own edit before the next; on any error or interrupt, every weight comes back
    with editing(model.model, dict(model.model.named_parameters())):
        for objective, name, layers in tqdm(runs, desc="compare_layer_sets", unit="run", disable=not progress):
            start = time.perf_counter()
            result = unlearn(model, forget, retain, layers=layers, objective=objective, progress=False,
                             **unlearn_settings)
            seconds = time.perf_counter() - start
            try:
                scores = evaluate(model, forget, retain, **score)
                edited = result.edited_model() if audited else None
            finally:
                result.revert()
            records.append(dict(objective=result.objective.label, layer_set=name, layers=result.selection.layers,
                                trainable=result.selection.count, share=result.selection.share, seconds=seconds,
                                **scores.to_dict(), **(audited(edited, result.selection.layers) if audited else {})))
            del edited
    import pandas as pd

    return pd.DataFrame.from_records(records)


class _Auditor:
    """Audits each edit of one model against one baseline audit of the original."""

    def __init__(self, model: LoadedModel, task: "UnlearningTask", config: "AuditConfig | None"):
        from causal_unlearn.auditing.audit import AuditConfig, audit

        self.model, self.task, self.config, self._audit = model, task, config or AuditConfig(), audit
        self.baseline = audit(model, model.copy(), task, config=self.config, progress=False)

    def original_summary(self) -> dict[str, float]:
        """The baseline's numbers for the original (its "edited" copy is the original itself)."""
        return self.baseline.summary()

    def __call__(self, edited: LoadedModel, layers: Sequence[int]) -> dict[str, float]:
        return self._audit(self.model, edited, self.task, config=self.config, layers=layers, baseline=self.baseline,
                           progress=False).summary()

