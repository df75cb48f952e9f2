"""Named switches of the tracing methods: the exact engine's shortcuts and attribution's fixes."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Switches:
    """Named settings of a method, each off at False or 0; `enabled` lists those on, `none()`
    turns all off."""

    @classmethod
    def none(cls):
        return cls(**{f.name: type(f.default)() for f in fields(cls)})

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if getattr(self, f.name))


@dataclass(frozen=True)
class Shortcuts(Switches):
    """The engine's shortcuts, each switchable. Every one is exact (any combination gives the
    textbook loop's numbers up to float rounding); turning one off checks it alone, or works
    around a model it does not suit.

    - `prefix_cache`: feed positions t.. only, with the corrupted run's keys and values before t
      (`hooks.prefilled_cache`);
    - `skip_blocks`: blocks below a cell's first changed block return the corrupted run's states
      (`hooks.skip`);
    - `last_position_mlp`: the last block's MLP runs on the last position only (`hooks.last_position_only`);
    - `deferred_unembedding`: the last positions of many batches are unembedded in one product
      (`hooks.deferred`);
    - `skip_uncorrupted`: cells before the first corrupted token score `low` without a forward
      (so no intervention: the engine does not schedule them).

    Examples:
        >>> Shortcuts(skip_blocks=False).enabled
        ('prefix_cache', 'last_position_mlp', 'deferred_unembedding', 'skip_uncorrupted')
        >>> Shortcuts.none().enabled
        ()
    """

    prefix_cache: bool = True
    skip_blocks: bool = True
    last_position_mlp: bool = True
    deferred_unembedding: bool = True
    skip_uncorrupted: bool = True


@dataclass(frozen=True)
class AttributionFixes(Switches):
    """The fixes `method="attribution"` applies to attribution patching (described in
    `causal_unlearn.tracing.attribution`); `relp` takes relevance coefficients in place of the
    gradient (relevance patching, `causal_unlearn.patching.relevance`), `relp_attention` adds
    RelP's attention rule. `AttributionFixes.none()` is plain AtP; the default is
    the best measured on the built-in model (docs/tracing.md, Speed).

    `trace` leaves the default's `qk_fix` out for a model whose attention cannot be recorded
    (Falcon; `result.settings.fixes` says so); asked for explicitly there, it is an error.

    Examples:
        >>> AttributionFixes().enabled, AttributionFixes(grad_drop=True, steps=0).enabled
        (('log_odds', 'qk_fix', 'steps'), ('log_odds', 'qk_fix', 'grad_drop'))
    """

    log_odds: bool = True
    qk_fix: bool = True
    grad_drop: bool = False
    steps: int = 2
    relp: bool = False
    relp_attention: bool = False

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps is the number of interpolation points between the corrupted and the clean run "
                             f"(0: the gradient at the corrupted run only), a whole number >= 0; got {self.steps!r}")
        if self.relp_attention and not self.relp:
            raise ValueError("relp_attention is RelP's attention rule (probabilities held constant); it goes with "
                             "relp=True")
        if self.relp_attention and self.qk_fix:
            raise ValueError("relp_attention holds the attention probabilities constant, and qk_fix puts their exact "
                             "change back in; choose one (qk_fix=False, or relp_attention=False)")

    @property
    def alphas(self) -> list[float]:
        """Where the gradients are taken, 0 the corrupted run and 1 the clean one: the midpoints
        of `steps` equal intervals, or the corrupted run alone."""
        return [(k + 0.5) / self.steps for k in range(self.steps)] or [0.0]
