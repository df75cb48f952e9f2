"""`TraceConfig`: every setting of a trace, checked once."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

from causal_unlearn.models.hooks import attention_recordable
from causal_unlearn.models.loader import BUILTIN_MODELS, LoadedModel
from causal_unlearn.patching.sites import KINDS, Site, resolve_site
from causal_unlearn.tracing.corruption import Corruption, resolve_corruption
from causal_unlearn.tracing.metrics import BuiltinMetric, Metric, describe_metric, resolve_metric
from causal_unlearn.tracing.switches import AttributionFixes, Shortcuts
from causal_unlearn.validation import finite, integer


@dataclass(frozen=True)
class RegisteredEngine:
    engine: Callable  # an `engines.Engine`
    batches_facts: bool  # cells of several facts share forwards: trace_facts hands it many at once


# (backend, method) -> engine; the engines register themselves when `causal_unlearn.tracing` loads
ENGINES: dict[tuple[str, str], RegisteredEngine] = {}


def register_engine(backend: str, method: str, engine: Callable, *, batches_facts: bool = False) -> None:
    """Make `engine` the one `trace(..., backend=backend, method=method)` runs; with
    `batches_facts`, `trace_facts` hands it many facts at once (else one at a time).

    Examples:
        >>> import causal_unlearn as cu
        >>> exact = ENGINES[("torch", "exact")].engine
        >>> def counting(lm, facts, config, *, progress=True):  # wraps the exact engine
        ...     counting.facts += len(facts)
        ...     return exact(lm, facts, config, progress=progress)
        >>> counting.facts = 0
        >>> register_engine("torch", "counting", counting)
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> _ = cu.trace(lm, "Otto Russet lives in", "Otto Russet", method="counting", kinds=("hidden",), samples=1,
        ...              progress=False)
        >>> counting.facts
        1
        >>> del ENGINES[("torch", "counting")]
    """
    ENGINES[(backend, method)] = RegisteredEngine(engine, batches_facts)


def default_window(n_layers: int) -> int:
    """ROME's window of 10 layers was for GPT-2 XL's 48; scaled with depth: about a fifth of the
    layers, at least 1.

    Examples:
        >>> default_window(48), default_window(12), default_window(8), default_window(2)
        (10, 2, 2, 1)
    """
    return max(1, round(n_layers / 4.8))


EXACT_CELLS = 0.1  # the share of each site's cells method="guided" traces exactly, by default


@dataclass(frozen=True)
class TraceConfig:
    """How to trace: which sites, how to corrupt, how to score, which method and engine.

    `kinds`: sites by name ("hidden", "mlp", "attn", "head", "resid_pre") or `Site` objects
    (`MLPNeurons([...])`, `ModuleSite("...{layer}...", input=True)`). `noise`: "s3" (Gaussian, 3 x
    the subject embeddings' std), a float scale, "uniform", `TokenReplacement(other_prompt)` or a
    `Corruption`. `window`: layers an `mlp`/`attn` cell restores (None: about a fifth of the
    model's depth, ROME's 10 at 48 layers). `metric`: "prob", "logprob", "logit_diff" (with
    `foil`), a built-in (`ProbabilityMass([...])`) or any function from last-position logits
    (batch, vocab) to one score per row. `method`: "exact", "attribution" (gradients, with
    `fixes`) or "guided" (both). `backend`: "torch" or "nnsight" (`remote=True`: on NDIF). `subject_std` overrides the
    std the s3 rule scales. `top_predictions=k` keeps each cell's k most probable tokens.
    `shortcuts` switches the exact engine's shortcuts (each exact: only the time changes).
    `method="guided"` ranks the cells by attribution and traces `exact_cells` of each site exactly
    (a share of its cells, or a count).

    Examples:
        >>> config = TraceConfig(kinds=("hidden", "head"), samples=3)
        >>> [site.name for site in config.sites], replace(config, samples=5).samples
        (['hidden', 'head'], 5)
    """

    kinds: Sequence[str | Site] = KINDS
    samples: int = 10
    noise: str | float | Corruption = "s3"
    window: int | None = None
    metric: str | BuiltinMetric | Metric = "prob"
    foil: str | int | None = None
    seed: int = 0
    method: str = "exact"
    backend: str = "torch"
    remote: bool | str = False
    max_batch_tokens: int = 8192
    top_predictions: int = 0
    subject_std: float | None = None
    shortcuts: Shortcuts = Shortcuts()
    fixes: AttributionFixes = AttributionFixes()
    exact_cells: int | float = EXACT_CELLS

    def __post_init__(self):
        kinds = (self.kinds,) if isinstance(self.kinds, (str, Site)) else tuple(self.kinds)
        if not kinds:
            raise ValueError(f"no kinds to trace; choose from {KINDS + ('head', 'resid_pre')} or pass Site objects")
        sites = tuple(resolve_site(k) for k in kinds)
        names = [s.name for s in sites]
        if len(set(names)) < len(names):
            raise ValueError(f"kinds {names} name a site twice; each site is traced once")
        self._set("kinds", kinds)
        self._set("samples", integer("samples", self.samples, minimum=1))
        self._set("noise", resolve_corruption(self.noise))
        if self.window is not None:
            self._set("window", integer("window", self.window, minimum=1))
        resolve_metric(self.metric, self.foil)
        self._set("seed", integer("seed", self.seed))
        self._check_backend()
        self._set("max_batch_tokens", integer("max_batch_tokens", self.max_batch_tokens, minimum=1))
        self._set("top_predictions", integer("top_predictions", self.top_predictions, minimum=0))
        if self.subject_std is not None:
            self._set("subject_std", finite("subject_std", self.subject_std, above=0))
        self._check_switches()

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    def _check_backend(self) -> None:
        methods, backends = {m for _, m in ENGINES}, {b for b, _ in ENGINES}
        if self.method not in methods:
            raise ValueError(f"unknown method {self.method!r}; use one of {sorted(methods)}")
        if self.backend not in backends:
            raise ValueError(f"unknown backend {self.backend!r}; use 'torch' (this process, fastest) or 'nnsight' "
                             "(nnsight interventions, locally or on NDIF with remote=True)")
        if self.remote not in (False, True, "local"):
            raise ValueError(f"remote must be False, True (NDIF) or 'local' (the remote path, run here), got {self.remote!r}")
        if self.remote and self.backend != "nnsight":
            raise ValueError("remote tracing runs through nnsight: pass backend='nnsight' with remote=...")
        if self.backend == "nnsight" and (self.method != "exact" or self.top_predictions):
            raise ValueError("backend='nnsight' runs method='exact' without top_predictions; use the torch backend for "
                             "attribution or top predictions")
        if (self.backend, self.method) not in ENGINES:
            raise ValueError(f"no engine runs method={self.method!r} on backend={self.backend!r}; registered: "
                             f"{sorted(ENGINES)}")

    def _check_switches(self) -> None:
        if not isinstance(self.shortcuts, Shortcuts):
            raise TypeError(f"shortcuts must be a Shortcuts, e.g. Shortcuts(skip_blocks=False), got {self.shortcuts!r:.80}")
        if not isinstance(self.fixes, AttributionFixes):
            raise TypeError(f"fixes must be an AttributionFixes, e.g. AttributionFixes(grad_drop=True), got {self.fixes!r:.80}")
        if self.fixes != AttributionFixes() and self.method == "exact":
            raise ValueError(f"fixes={self.fixes} changes method='attribution' (and 'guided') only; this trace runs "
                             f"method={self.method!r}")
        share = self.exact_cells
        if isinstance(share, bool) or not (isinstance(share, int) and share >= 1
                                           or isinstance(share, float) and 0 < share <= 1):
            raise ValueError(f"exact_cells is the share of each site's cells method='guided' traces exactly (a float "
                             f"in (0, 1]) or their number (an int >= 1); got {share!r}")
        if share != EXACT_CELLS and self.method != "guided":
            raise ValueError(f"exact_cells sets method='guided' only; this trace runs method={self.method!r}")
        if self.top_predictions and self.method != "exact":
            raise ValueError("top_predictions needs method='exact': the attribution method runs no restored forward")

    @property
    def engine(self) -> RegisteredEngine:
        """The engine registered for this backend and method."""
        return ENGINES[(self.backend, self.method)]

    @property
    def sites(self) -> tuple[Site, ...]:
        """The traced sites, shorthands resolved."""
        return tuple(resolve_site(k) for k in self.kinds)

    @property
    def corruption(self) -> Corruption:
        return self.noise

    @property
    def scorer(self) -> BuiltinMetric | Metric:
        """The metric, shorthands (and `foil`) resolved."""
        return resolve_metric(self.metric, self.foil)

    def describe_metric(self) -> str:
        return describe_metric(self.scorer)

    def with_overrides(self, caller: str, **overrides) -> TraceConfig:
        """This config with some settings changed; a clear error for a setting that does not exist."""
        unknown = sorted(set(overrides) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"{caller} got unknown settings {unknown}; the settings are TraceConfig's: "
                            f"{[f.name for f in fields(self)]}")
        return replace(self, **overrides) if overrides else self

    def for_model(self, lm: LoadedModel) -> TraceConfig:
        """The settings `lm` is traced with: the window for its depth, the attribution fixes its
        attention allows; a clear error for what it cannot run."""
        if lm.is_remote_only and not (self.backend == "nnsight" and self.remote):
            raise ValueError(f"{lm.name}'s weights are not on this machine (meta device); trace it on NDIF with "
                             "backend='nnsight', remote=True, or load it with its weights")
        if lm.is_sharded:
            raise ValueError(f"{lm.name} is sharded over processes (shard_model), which is for training; trace an "
                             "unsharded model (load it again, or the folder result.save_pretrained wrote)")
        if self.remote is True and (lm.name in BUILTIN_MODELS or Path(lm.name).expanduser().exists()):
            raise ValueError(f"remote=True sends the trace to NDIF, which runs models by their hub id (e.g. "
                             f"'openai-community/gpt2'); {lm.name!r} is a model on this machine: trace it here "
                             "(remote=False), or try the request path locally with remote='local'")
        for site in self.sites:
            site.check(lm)
        config = self if self.window is not None else replace(self, window=default_window(lm.n_layers))
        if any(site.windowed for site in self.sites) and config.window >= lm.n_layers / 2 and lm.n_layers > 1:
            warnings.warn(f"window={config.window} restores {min(config.window, lm.n_layers)} of {lm.n_layers} layers "
                          "around each mlp/attn cell, half the model or more, which flattens those heatmaps; "
                          f"window={default_window(lm.n_layers)} is about a fifth of the depth", stacklevel=4)
        fixes = config.fixes
        if self.method != "exact" and fixes.qk_fix and not attention_recordable(lm.model, lm.architecture.attn_module(0)):
            if fixes != AttributionFixes():
                raise ValueError(f"qk_fix needs the attention probabilities, which {lm.name}'s attention does not expose "
                                 "(it does not run through transformers' AttentionInterface); pass "
                                 "fixes=AttributionFixes(qk_fix=False)")
            config = replace(config, fixes=replace(fixes, qk_fix=False))  # the default: every fix this model allows
        if self.method != "exact" and fixes.relp_attention \
                and not attention_recordable(lm.model, lm.architecture.attn_module(0)):
            raise ValueError(f"relp_attention holds the attention probabilities constant, which {lm.name}'s attention "
                             "does not allow (it does not run through transformers' AttentionInterface); pass "
                             "fixes=AttributionFixes(relp=True, relp_attention=False)")
        return config
