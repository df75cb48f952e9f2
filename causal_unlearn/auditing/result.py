"""What an audit returns: one long table of measurements, and views of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from causal_unlearn.figures import Plottable
from causal_unlearn.localization.verify import TraceComparison

COLUMNS = ("check", "measure", "split", "attribute", "variant", "layer", "value", "n")


@dataclass
class AuditResult(Plottable):
    """Every measurement of `audit` as a record: which check, what it measures, on whose probes
    (`split`), which `attribute` ("all" for the mean over every probe), on which model `variant`
    ("original", "edited", "edited, int8", ...), at which `layer` (decoding and the head
    projection's per-layer rows only), its `value` and how many probes it averages (`n`).

    `table()` puts the variants side by side, `summary()` gives the headline numbers, `plot()`
    draws them, `comparison` holds the re-trace (or None when it was not run; its headline numbers
    are also rows of the table), `skipped` says which checks the task could not support and why
    (and, as "membership: reference", a membership attack that could not run; as "precision: nf4",
    the 4-bit copy where bitsandbytes is missing).

    Examples:
        >>> records = [dict(check="probes", measure="recall", split="forget", attribute="all", variant=v,
        ...                 layer=None, value=x, n=10) for v, x in (("original", 0.9), ("edited", 0.1))]
        >>> AuditResult(records, {}).summary()
        {'probe_recall_forget': 0.1}
    """

    records: list[dict[str, Any]]
    settings: dict[str, Any]
    comparison: TraceComparison | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def measurements(self) -> list[dict[str, Any]]:
        """Every record, the re-trace's included (p(answer), share known, and the MLP effect at
        the edited layers, original and edited)."""
        return self.records + self._retrace_records()

    def _retrace_records(self) -> list[dict[str, Any]]:
        if self.comparison is None:
            return []
        n = len(self.comparison.traces_before)
        where = "edited layers" if self.comparison.layers else "all layers"
        measures = {"p_answer": "p(answer)", "known": "known", "effect": f"mlp effect, {where}"}
        return [dict(check="retrace", measure=measures[name], split="forget", attribute="all",
                     variant="original" if when == "before" else "edited", layer=None, value=value, n=n)
                for key, value in self.comparison.summary().items()
                for name, when in [key.rsplit("_", 1)]]

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame(self.measurements, columns=list(COLUMNS))

    def table(self, attribute: str = "all"):
        """Rows (check, measure, split, attribute), a column per model variant: the audit at a
        glance, over every attribute (or one). Decoding reads out each of its attributes and
        shows its best layer, as the head projection's `top-B, per layer` rows do."""
        frame = self.to_dataframe()
        frame = frame[(frame.attribute == attribute) | (frame.check == "decoding")]
        frame = frame.groupby(["check", "measure", "split", "attribute", "variant"], sort=False)["value"].max()
        return frame.unstack("variant")

    def value(self, check: str, measure: str, split: str, variant: str, attribute: str = "all") -> float:
        """One number of the table (decoding: its best layer)."""
        values = [r["value"] for r in self.measurements
                  if (r["check"], r["measure"], r["split"], r["variant"], r["attribute"])
                  == (check, measure, split, variant, attribute)]
        if not values:
            raise KeyError(f"the audit has no {check}/{measure} for split {split!r}, variant {variant!r}, "
                           f"attribute {attribute!r}; see result.table()")
        return max(values)

    def summary(self) -> dict[str, float]:
        """The headline numbers, flat (for `compare`, the CLI and scores.json)."""
        wanted = {
            "probe_recall_forget": ("probes", "recall", "forget", "edited"),
            "probe_recall_retain": ("probes", "recall", "retain", "edited"),
            "choice_top1_forget": ("choice", "top-1", "forget", "edited"),
            "choice_top1_retain": ("choice", "top-1", "retain", "edited"),
            "relearn_forget_half": ("relearning", "recall", "forget, held-out half", "edited, relearned"),
            "relearn_benign": ("relearning", "recall", "forget", "edited, relearned on retain"),
            "int8_recall_forget": ("precision", "recall", "forget", "edited, int8"),
            "bf16_recall_forget": ("precision", "recall", "forget", "edited, bf16"),
            "nf4_recall_forget": ("precision", "recall", "forget", "edited, nf4"),
        }
        for name, check in (("head_projection_forget", "head_projection"), ("probability_delta_forget",
                                                                            "probability_delta")):
            measure = self.first_measure(check)  # "top-B": B is the audit's setting
            if measure:
                wanted[name] = (check, measure, "forget", "edited")
        wanted.update(bio_openings_forget=("bio_openings", "recall", "forget", "edited"),
                      bio_openings_retain=("bio_openings", "recall", "retain", "edited"))
        out = {}
        for name, key in wanted.items():
            try:
                out[name] = self.value(*key)
            except KeyError:
                continue
        for record in self.records:
            if (record["check"], record["variant"]) == ("membership", "edited"):
                measure = record["measure"]
                out["privleak" if measure.startswith("privleak") else f"mia_{measure.removesuffix(' AUC')}_auc"] = \
                    record["value"]
        for attribute in self.decoded_attributes:
            out[f"decoding_{attribute}_forget"] = self.value("decoding", "accuracy", "forget", "edited", attribute)
        if self.comparison is not None:
            out.update({f"retrace_{k}": v for k, v in self.comparison.summary().items()
                        if k.startswith(("effect", "p_answer"))})
        return out

    def first_measure(self, check: str) -> str | None:
        """The first measure the audit recorded for `check` (its headline: "top-1" for the head
        projection at B = 1), or None where the check did not run."""
        return next((r["measure"] for r in self.records if r["check"] == check), None)

    @property
    def decoded_attributes(self) -> list[str]:
        """The attributes the read-out decoded for forget subjects, in order."""
        return list(dict.fromkeys(r["attribute"] for r in self.records
                                  if (r["check"], r["measure"], r["split"]) == ("decoding", "accuracy", "forget")))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.3f}" for k, v in list(self.summary().items())[:4])
        skipped = f"; skipped {', '.join(self.skipped)}" if self.skipped else ""
        return f"AuditResult({len(self.measurements)} measurements; {shown}, ...{skipped})"


def mean_records(check: str, measure: str, variant: str, probes, values, *, layer: int | None = None) -> list[dict]:
    """Records of the mean of `values` (one per probe) per split, per split and attribute, and
    over all attributes ("all")."""
    groups: dict[tuple[str, str], list[float]] = {}
    for probe, value in zip(probes, values):
        groups.setdefault((probe.split, probe.attribute), []).append(float(value))
        groups.setdefault((probe.split, "all"), []).append(float(value))
    return [dict(check=check, measure=measure, split=split, attribute=attribute, variant=variant, layer=layer,
                 value=fmean(group), n=len(group)) for (split, attribute), group in groups.items()]
