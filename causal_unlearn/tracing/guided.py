"""Exact where it matters (`method="guided"`): attribution ranks every cell, the exact engine
traces the strongest ones, and the result says which cells are exact.

Attribution's estimates stay for the other cells (`TraceResult.exact_cells` marks the exact
ones). The cells before the first corrupted token are exact either way: restoring them changes
nothing, and both methods give the corrupted score there.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.attribution import run_attribution_facts
from causal_unlearn.tracing.config import TraceConfig
from causal_unlearn.tracing.engine import first_corrupted_position, run_exact_facts
from causal_unlearn.tracing.engines import TraceInput, TraceScores, register_engine


def run_guided_facts(lm: LoadedModel, facts: list[TraceInput], config: TraceConfig, *,
                     progress: bool = True) -> list[TraceScores]:
    """Attribution for every cell, then the exact engine for the `config.exact_cells` cells of each
    site with the largest estimated effect."""
    estimates = run_attribution_facts(lm, facts, config, progress=progress)
    firsts = [first_corrupted_position(fact.clean, fact.corrupted) for fact in facts]
    chosen = [{name: strongest_cells(scores - estimate.low, config.exact_cells, first)
               for name, scores in estimate.scores.items()}
              for estimate, first in zip(estimates, firsts)]
    exact = run_exact_facts(lm, facts, config, progress=progress,
                            keep=lambda cell: bool(chosen[cell.fact][cell.site.name][cell.index]))
    for estimate, traced, masks, first in zip(estimates, exact, chosen, firsts):
        for name, mask in masks.items():
            estimate.scores[name] = torch.where(mask, traced.scores[name].to(estimate.scores[name].dtype),
                                                estimate.scores[name])
            mask[:first] = True  # both methods give the corrupted score there
        estimate.exact_cells = masks
    return estimates


def strongest_cells(effects: Float[Tensor, "pos layer *unit"], exact_cells: int | float,
                    first: int) -> Bool[Tensor, "pos layer *unit"]:
    """The cells at tokens `first`.. with the largest |estimated effect|: `exact_cells` of them
    (a count), or that share of them (a float).

    Examples:
        >>> strongest_cells(torch.tensor([[0.0, 0.0], [0.1, -0.5], [0.3, 0.2]]), 2, first=1).int().tolist()
        [[0, 0], [0, 1], [1, 0]]
    """
    eligible = effects[first:].abs().flatten()
    n = exact_cells if isinstance(exact_cells, int) else math.ceil(exact_cells * eligible.numel())
    mask = torch.zeros(effects.shape, dtype=torch.bool)
    picked = torch.zeros(eligible.numel(), dtype=torch.bool)
    picked[eligible.topk(min(n, eligible.numel())).indices] = True
    mask[first:] = picked.view(effects[first:].shape)
    return mask


register_engine("torch", "guided", run_guided_facts, batches_facts=True)
