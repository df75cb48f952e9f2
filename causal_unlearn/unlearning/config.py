"""`UnlearnConfig`: the settings of one unlearning run, checked once, travelling together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from causal_unlearn.validation import finite, integer, replaced

Select = Literal["lowest_joint_loss", "last"]
LossOn = Literal["output", "text", "distinct"]
MixedPrecision = Literal["no", "bf16"]


@dataclass(frozen=True)
class UnlearnConfig:
    """How `unlearn` trains. The defaults are the paper's recipe (OLMo-1B on LUME) with the HF
    Trainer defaults its code ran under (gradient clipping at norm 1.0, linear decay, no warm-up).

    - `batch_size` rows per micro-batch; one AdamW step per `grad_accum` micro-batches on each
      process, so a step reads `batch_size * grad_accum * processes` rows.
    - `eval_every` steps the objective is evaluated on all rows; `select="lowest_joint_loss"`
      keeps the weights of the best evaluation, `"last"` the final ones.
    - `loss_on`: "output" (the answer tokens, the paper), "text" (every token), or "distinct"
      (the answer plus the forget prompt tokens that no retain prompt has).
    - `max_grad_norm` clips the global gradient norm (None: no clipping).
    - `mixed_precision="bf16"` runs forwards under bf16 autocast while the weights (and AdamW's
      state) stay in the model's own dtype, e.g. fp32 master weights.
    - `gradient_checkpointing` recomputes each block's activations in the backward instead of
      keeping them (less memory, about one more forward of time).

    Examples:
        >>> UnlearnConfig(lr=1e-3, grad_accum=1).replace(epochs=2).epochs
        2
        >>> UnlearnConfig(epochs=0)
        Traceback (most recent call last):
        ...
        ValueError: epochs must be a positive integer, got 0
    """

    epochs: int = 8
    lr: float = 1.5e-5
    batch_size: int = 12
    grad_accum: int = 10
    eval_every: int | None = 4
    select: Select = "lowest_joint_loss"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    loss_on: LossOn = "output"
    max_length: int | None = None
    mixed_precision: MixedPrecision = "no"
    gradient_checkpointing: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        for name in ("epochs", "batch_size", "grad_accum"):
            set_(name, _positive(name, getattr(self, name)))
        for name in ("eval_every", "max_length"):
            if getattr(self, name) is not None:
                set_(name, _positive(name, getattr(self, name), " or None"))
        set_("lr", finite("lr", self.lr, above=0))
        set_("weight_decay", finite("weight_decay", self.weight_decay, at_least=0))
        if self.max_grad_norm is not None:
            set_("max_grad_norm", finite("max_grad_norm", self.max_grad_norm, above=0))
        set_("seed", integer("seed", self.seed))
        _one_of("loss_on", self.loss_on, ("output", "text", "distinct"), "'output' (the paper), 'text' or 'distinct'")
        _one_of("select", self.select, ("lowest_joint_loss", "last"), "'lowest_joint_loss' or 'last'")
        _one_of("mixed_precision", self.mixed_precision, ("no", "bf16"), "'no' or 'bf16'")
        if not isinstance(self.gradient_checkpointing, bool):
            raise TypeError(f"gradient_checkpointing must be True or False, got {self.gradient_checkpointing!r}")
        if self.select == "lowest_joint_loss" and self.eval_every is None:
            raise ValueError("select='lowest_joint_loss' needs evaluations; set eval_every or use select='last'")

    def replace(self, **changes: Any) -> UnlearnConfig:
        """A copy with `changes`; an unknown name is refused, listing the known ones."""
        return replaced(self, "unlearning", changes)


def _positive(name: str, value: Any, alternative: str = "") -> int:
    try:
        return integer(name, value, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer{alternative}, got {value!r}") from None


def _one_of(name: str, value: Any, allowed: tuple[str, ...], advice: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; use {advice}")
