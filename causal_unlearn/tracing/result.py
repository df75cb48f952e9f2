"""`TraceResult`: one traced fact, with everything needed to plot, compare and reproduce it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from itertools import product
from pathlib import Path

from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from causal_unlearn.figures import Plottable


TENSOR_FIELDS = ("scores", "input_ids", "top_ids", "top_probs", "exact_cells")


@dataclass(frozen=True)
class TraceSettings:
    """How a trace was made: enough to reproduce it."""

    model: str
    corruption: str
    noise_scale: float | None
    samples: int
    window: int
    seed: int
    metric: str
    method: str
    fixes: str = ""  # the attribution method's fixes, "+"-joined ("none" for plain attribution patching)
    backend: str = "torch"

    @classmethod
    def of(cls, config, *, model: str, noise_scale: float | None, samples: int) -> TraceSettings:
        """The record of a `TraceConfig` (resolved for the model) that traced a fact."""
        fixes = ("+".join(config.fixes.enabled) or "none") if config.method != "exact" else ""
        if config.method == "guided":
            fixes += f"; exact cells {config.exact_cells}"
        return cls(model=model, corruption=config.corruption.describe(), noise_scale=noise_scale, samples=samples,
                   window=config.window, seed=config.seed, metric=config.describe_metric(), method=config.method,
                   fixes=fixes, backend=config.backend)


@dataclass
class TraceResult(Plottable):
    """Scores of one fact's causal trace.

    `scores[kind][t, l]` is the metric (p(answer) by default) averaged over the corrupted copies
    when the clean state of `kind` is restored at token t and layer l (for `mlp`/`attn`, a window
    of layers around l); a site of units has one more axis (`scores["head"][t, l, h]`). `low` is
    the corrupted score, `high` the clean one. `config` is the `TraceConfig` it was traced with
    (not saved: `settings` records it). A `method="guided"` trace marks in `exact_cells[kind]` the
    cells the exact engine scored (the rest are attribution's estimates).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> result = cu.trace(lm, "Otto Russet lives in", "Otto Russet", kinds=("hidden",), samples=2)
        >>> result.scores["hidden"].shape == (len(result.tokens), lm.n_layers), result.known
        (True, True)
    """

    prompt: str
    subject: str
    tokens: list[str]
    input_ids: Int[Tensor, " pos"]
    subject_range: tuple[int, int]
    answer: str
    answer_id: int
    high: float
    low: float
    known: bool
    scores: dict[str, Float[Tensor, "pos layer *unit"]]
    settings: TraceSettings
    clean_prediction: str = ""
    meta: dict = field(default_factory=dict)
    top_ids: dict[str, Int[Tensor, "pos layer k"]] = field(default_factory=dict, repr=False)
    top_probs: dict[str, Float[Tensor, "pos layer k"]] = field(default_factory=dict, repr=False)
    exact_cells: dict[str, Bool[Tensor, "pos layer *unit"]] = field(default_factory=dict, repr=False)
    config: object = field(default=None, repr=False, compare=False)

    @property
    def kinds(self) -> list[str]:
        return list(self.scores)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{kind!r}: {tuple(scores.shape)}" for kind, scores in self.scores.items())
        known = "" if self.known else f", known=False (top-1 {self.clean_prediction!r})"
        return (f"TraceResult({self.prompt!r} -> {self.answer!r}, subject={self.subject!r}, high={self.high:.4g}, "
                f"low={self.low:.4g}{known}, scores={{{shapes}}}, metric={self.settings.metric!r}, "
                f"window={self.settings.window}, samples={self.settings.samples})")

    def indirect_effects(self, kind: str) -> Float[Tensor, "pos layer"]:
        """score - low: how much restoring the cell recovers."""
        if kind not in self.scores:
            raise ValueError(f"no {kind!r} scores in this trace; it has {self.kinds}")
        return self.scores[kind] - self.low

    def predictions(self, kind: str, token: int, layer: int, unit: int | None = None) -> list[tuple[int, float]]:
        """The (token id, probability) pairs most likely next when the cell is restored (with `unit`:
        a head), if the trace kept them (`trace(..., top_predictions=k)`)."""
        if kind not in self.top_ids:
            raise ValueError(f"this trace kept no top predictions for {kind!r}; trace with top_predictions=5")
        index = (token, layer) if unit is None else (token, layer, unit)
        return list(zip(self.top_ids[kind][index].tolist(), self.top_probs[kind][index].tolist()))

    def save(self, path: str | Path) -> Path:
        """Write one .safetensors file (tensors, with the rest as JSON metadata)."""
        path = Path(path)
        tensors = {f"scores.{k}": v.contiguous() for k, v in self.scores.items()}
        tensors |= {f"top_ids.{k}": v.contiguous() for k, v in self.top_ids.items()}
        tensors |= {f"top_probs.{k}": v.contiguous() for k, v in self.top_probs.items()}
        tensors |= {f"exact_cells.{k}": v.contiguous() for k, v in self.exact_cells.items()}
        tensors["input_ids"] = self.input_ids.contiguous()
        info = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in TENSOR_FIELDS + ("config",)}
        info["settings"] = asdict(self.settings)
        save_file(tensors, str(path), metadata={"trace_result": json.dumps(info)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "TraceResult":
        from safetensors import SafetensorError, safe_open

        if not Path(path).is_file():
            raise FileNotFoundError(f"no saved trace at {path}")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ValueError(f"{path} is not a saved TraceResult: the file is not readable safetensors "
                             f"({str(error).splitlines()[0]}); it may be truncated or corrupt, so save the trace again") from None
        if "trace_result" not in metadata:
            raise ValueError(f"{path} is not a saved TraceResult (no trace_result metadata)")
        try:
            info = json.loads(metadata["trace_result"])
            info["settings"] = TraceSettings(**info["settings"])
        except (json.JSONDecodeError, TypeError, KeyError) as error:
            raise ValueError(f"{path} is not a saved TraceResult: its trace_result metadata is not what "
                             f"TraceResult.save writes ({type(error).__name__}: {error}); save the trace again") from error
        by_field = {name: {k.removeprefix(f"{name}."): v for k, v in tensors.items() if k.startswith(f"{name}.")}
                    for name in ("scores", "top_ids", "top_probs", "exact_cells")}
        info["subject_range"] = tuple(info["subject_range"])
        return cls(input_ids=tensors["input_ids"], **by_field, **info)

    def to_dataframe(self):
        """One row per (kind, position, layer[, unit]): token, score and indirect effect."""
        import pandas as pd

        start, end = self.subject_range
        records = []
        for kind, scores in self.scores.items():
            for index in product(*map(range, scores.shape)):
                t, l = index[:2]
                unit = dict(unit=index[2]) if len(index) > 2 else {}
                exact = dict(exact=bool(self.exact_cells[kind][index])) if kind in self.exact_cells else {}
                records.append(dict(kind=kind, position=t, token=self.tokens[t], in_subject=start <= t < end, layer=l,
                                    **unit, score=float(scores[index]), indirect_effect=float(scores[index] - self.low),
                                    **exact))
        return pd.DataFrame.from_records(records)
