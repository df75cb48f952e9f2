"""The ROME recipe as nnsight interventions, so a trace can run where nnsight runs: here, or on
NDIF (`remote=True`) for models too large to hold.

It computes the same cells as the exact engine, the textbook way: every cell is one invoke of
`samples` corrupted copies with the clean states written back at its token, many invokes
batched into one forward, all forwards in one `session` (one request when remote). Only the
scores travel back. The engine's shortcuts (prefix caches, skipped blocks) are left out: each
is exact, but a remote server runs only what the request's code says, and the textbook loop
is the one every nnsight user can read and check. A built-in metric sends back only the logit
columns it reads and each row's log-normalizer; a metric of your own runs inside the request.

The intervention bodies use torch, nnsight and plain Python only: on a server the request runs
without this package installed, so nothing of it (not even a helper function) may be named
inside a `session`.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float, Int
from nnsight import save
from torch import Tensor

from causal_unlearn.models.hooks import HookPoint, edit
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.config import TraceConfig
from causal_unlearn.tracing.engine import first_corrupted_position, site_points
from causal_unlearn.tracing.engines import TraceInput, TraceScores, cells_of, register_engine, table_shape
from causal_unlearn.tracing.metrics import BoundMetric


def nnsight_model(lm: LoadedModel) -> Any:
    """The `nnsight` wrapper of `lm` (the one `lm` was loaded from, or a new one around its
    weights, made once and kept)."""
    if lm.nnsight is None:
        from nnsight import TransformersModel

        lm.nnsight = TransformersModel(lm.model, tokenizer=lm.tokenizer)
    return lm.nnsight


@torch.no_grad()
def clean_passes(lm: LoadedModel, prompts: Sequence[Int[Tensor, " pos"]], *, remote: bool | str = False,
                 ) -> list[tuple[Float[Tensor, "pos d_model"], int]]:
    """Each prompt's embedding-module output and its clean top-1 next token, in one request."""
    model, embedding = nnsight_model(lm), lm.architecture.embedding
    prompts = [ids.detach().cpu() for ids in prompts]
    with _session(model, remote):
        passes = save([])
        for ids in prompts:
            with model.trace(ids[None]):
                embedded = model.get(embedding).output[0].detach().cpu()
                top1 = model.output.logits[0, -1].argmax().item()
                passes.append((embedded, top1))
    return [(embedded.to(lm.dtype) if lm.dtype.is_floating_point else embedded, int(top1)) for embedded, top1 in passes]


def run_nnsight_facts(lm: LoadedModel, facts: list[TraceInput], config: TraceConfig, *,
                      progress: bool = True) -> list[TraceScores]:
    """`run_nnsight` for each fact."""
    order = _execution_order(lm, site_points(lm, config.sites))
    return [run_nnsight(lm, fact, config, order) for fact in facts]


@torch.no_grad()
def run_nnsight(lm: LoadedModel, fact: TraceInput, config: TraceConfig, order: dict[HookPoint, int]) -> TraceScores:
    """Score every cell of the config's sites through nnsight; the numbers equal the exact engine's.
    `order` is the order in which a forward reaches the sites' states (`_execution_order`)."""
    model, spec = nnsight_model(lm), lm.architecture
    input_ids, corrupted, metric = fact.input_ids, fact.corrupted, fact.metric
    n_tokens, samples = input_ids.shape[0], corrupted.shape[0]
    first = first_corrupted_position(fact.clean.to(corrupted.device), corrupted)
    cells = list(cells_of(lm, config.sites, config.window, range(first, n_tokens)))
    per_forward = max(1, config.max_batch_tokens // (n_tokens * samples))
    # plain data for the request: per cell its token and (module, input, features) per restored
    # state, grouped by forward; each module is reached in the order the forward runs them
    plan = [[(cell.token, sorted([(p.module, p.input, None if p.features is None else p.index) for p in cell.points(lm)],
                                 key=lambda p: order[HookPoint(p[0], p[1])]))
             for cell in cells[i : i + per_forward]] for i in range(0, len(cells), per_forward)]
    recorded = [(p.module, p.input) for p in sorted(order, key=order.get)]
    # a built-in metric stays here (it is this package's); the request sends its columns back
    columns = list(metric.columns) if isinstance(metric, BoundMetric) else None
    own_metric = None if columns is not None else metric
    embedding = spec.embedding
    ids = input_ids.detach().cpu()[None]
    copies = ids.expand(samples, -1)
    corrupted = corrupted.detach().cpu()
    # the request's body: torch and plain Python only (it runs where this package is not installed)
    with _session(model, remote=config.remote):
        scored = save([])
        with model.trace(ids):
            clean = {}
            for module, is_input in recorded:
                state = model.get(module).input if is_input else model.get(module).output
                clean[(module, is_input)] = (state[0] if isinstance(state, tuple) else state)[0].clone()
            clean_logits = model.output.logits[:, -1].detach()
        with model.trace(copies):
            model.get(embedding).output[:] = corrupted
            corrupted_logits = model.output.logits[:, -1].detach()
        for forward in plan:
            with model.trace() as tracer:
                for token, restored in forward:
                    with tracer.invoke(copies):
                        model.get(embedding).output[:] = corrupted
                        for module, is_input, features in restored:
                            envoy = model.get(module)
                            state = envoy.input if is_input else envoy.output
                            state = state[0] if isinstance(state, tuple) else state
                            if is_input:  # a copy: the tensor a module reads may also be the residual stream
                                state = state.clone()
                            value = clean[(module, is_input)][token]
                            if features is None:
                                state[:, token] = value
                            else:
                                state[:, token, features] = value[features]
                            if is_input:
                                envoy.input = state
                        logits = model.output.logits[:, -1].detach()
                        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
                        if columns is None:
                            scored.append(own_metric(logits).cpu())
                        else:
                            scored.append((logits[:, columns].cpu(), logits.logsumexp(-1).cpu()))
        ends = save([clean_logits.cpu(), corrupted_logits.cpu()])
    low = metric(ends[1]).mean().item()
    # cells before the first corrupted position restore what the corruption never reached: they score `low`
    dtype = torch.promote_types(lm.dtype, torch.float32)
    tables = {site.name: torch.full(table_shape(lm, site, n_tokens), low, dtype=dtype) for site in config.sites}
    for cell, value in zip(cells, scored, strict=True):
        rows = metric.from_columns(*value) if columns is not None else value
        tables[cell.site.name][cell.index] = rows.mean()
    return TraceScores(metric(ends[0]).item(), low, int(ends[0].argmax(-1).item()), tables)


register_engine("nnsight", "exact", run_nnsight_facts)


def _execution_order(lm: LoadedModel, points: list[HookPoint]) -> dict[HookPoint, int]:
    """The order in which a forward reaches each state (nnsight interventions must follow it),
    from hooks on a one-token forward (on the meta device for weights that are not here); the
    points are whole states (`site_points`)."""
    seen: dict[HookPoint, int] = {}

    def reached(point: HookPoint):
        def note(state: Tensor) -> None:
            seen.setdefault(point, len(seen))

        return note

    device = next(lm.model.parameters()).device
    with edit(lm.model, {p: reached(p) for p in points}):
        lm.model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    return seen


def _session(model: Any, remote: bool | str):
    return model.session(remote=remote) if remote else model.session()
