"""What a traced forward is scored by, at the last position."""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

Metric = Callable[[Float[Tensor, "batch vocab"]], Float[Tensor, " batch"]]
METRICS = ("prob", "logprob", "logit_diff")


def make_metric(name: str, answer_id: int, foil_id: int | None = None) -> Metric:
    """A function from last-position logits to one score per row.

    Examples:
        >>> metric = make_metric("prob", answer_id=1)
        >>> metric(torch.tensor([[0.0, 0.0]]))
        tensor([0.5000])
    """
    if name == "prob":
        return lambda logits: torch.softmax(_at_least_fp32(logits), dim=-1)[:, answer_id]
    if name == "logprob":
        return lambda logits: torch.log_softmax(_at_least_fp32(logits), dim=-1)[:, answer_id]
    if name == "logit_diff":
        if foil_id is None:
            raise ValueError("metric='logit_diff' needs a foil: trace(..., foil=' Paris') or a foil token id")
        return lambda logits: _at_least_fp32(logits[:, answer_id] - logits[:, foil_id])
    raise ValueError(f"unknown metric {name!r}; use one of {METRICS}")


def _at_least_fp32(logits: Tensor) -> Tensor:
    """bf16/fp16 logits are scored in fp32; fp64 stays fp64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))
