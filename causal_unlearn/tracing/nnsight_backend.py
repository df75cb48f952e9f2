"""The ROME recipe as nnsight interventions, so a trace can run where nnsight runs: here, or on
NDIF (`remote=True`) for models too large to hold.

It computes the same cells as `engine.run_exact`, the textbook way: every cell is one invoke of
`samples` corrupted copies with the clean states written back at its token, many invokes
batched into one forward, all forwards in one `session` (one request when remote). Only the
scores travel back. The engine's shortcuts (prefix caches, skipped blocks) are left out: each
is exact, but a remote server runs only what the request's code says, and the textbook loop
is the one every nnsight user can read and check.

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

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.engine import Cell, TraceScores, restored_layers, state_address
from causal_unlearn.tracing.metrics import make_metric

KIND_ORDER = {"attn": 0, "mlp": 1, "hidden": 2}  # within a block: attention runs before the MLP, both before the output


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


@torch.no_grad()
def run_nnsight(
    lm: LoadedModel,
    input_ids: Int[Tensor, " pos"],
    corrupted: Float[Tensor, "samples pos d_model"],
    metric: str,
    answer_id: int,
    foil_id: int | None,
    *,
    kinds: tuple[str, ...],
    window: int,
    first_corrupted: int,
    max_batch_tokens: int = 8192,
    remote: bool | str = False,
) -> TraceScores:
    """Score every cell of `kinds` through nnsight; the numbers equal `run_exact`'s."""
    model, spec = nnsight_model(lm), lm.architecture
    n_layers, n_tokens, samples = lm.n_layers, input_ids.shape[0], corrupted.shape[0]
    cells = [Cell(kind, t, layer, restored_layers(kind, layer, window, n_layers))
             for kind in kinds for t in range(first_corrupted, n_tokens) for layer in range(n_layers)]
    per_forward = max(1, max_batch_tokens // (n_tokens * samples))
    # plain data for the request: (token, addresses to restore there) per cell, grouped by forward
    plan = [[(cell.token, [state_address(spec, cell.kind, l) for l in cell.restored]) for cell in cells[i : i + per_forward]]
            for i in range(0, len(cells), per_forward)]
    addresses = sorted({state_address(spec, k, l) for k in kinds for l in range(n_layers)},
                       key=lambda a: _execution_rank(spec, a, n_layers))
    embedding = spec.embedding
    ids = input_ids.detach().cpu()[None]
    copies = ids.expand(samples, -1)
    corrupted = corrupted.detach().cpu()
    # the request's body: torch and plain Python only (it runs where this package is not installed)
    with _session(model, remote):
        scores = save([])
        with model.trace(ids):
            clean = {}
            for address in addresses:
                output = model.get(address).output
                clean[address] = (output[0] if isinstance(output, tuple) else output)[0].clone()
            clean_logits = model.output.logits[:, -1].detach()
        with model.trace(copies):
            model.get(embedding).output[:] = corrupted
            corrupted_logits = model.output.logits[:, -1].detach()
        for forward in plan:
            with model.trace() as tracer:
                for token, restored in forward:
                    with tracer.invoke(copies):
                        model.get(embedding).output[:] = corrupted
                        for address in restored:
                            output = model.get(address).output
                            (output[0] if isinstance(output, tuple) else output)[:, token] = clean[address][token]
                        logits = model.output.logits[:, -1].detach()
                        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
                        if metric == "prob":
                            score = logits.softmax(-1)[:, answer_id]
                        elif metric == "logprob":
                            score = logits.log_softmax(-1)[:, answer_id]
                        else:
                            score = logits[:, answer_id] - logits[:, foil_id]
                        scores.append(score.mean().item())
        ends = save([clean_logits.cpu(), corrupted_logits.cpu()])
    metric_fn = make_metric(metric, answer_id, foil_id)
    low = metric_fn(ends[1]).mean().item()
    # cells before the first corrupted position restore what the corruption never reached: they score `low`
    table = {kind: torch.full((n_tokens, n_layers), low, dtype=torch.promote_types(lm.dtype, torch.float32))
             for kind in kinds}
    for cell, value in zip(cells, scores, strict=True):
        table[cell.kind][cell.token, cell.layer] = value
    return TraceScores(metric_fn(ends[0]).item(), low, int(ends[0].argmax(-1).item()), table)


def _execution_rank(spec, address: str, n_layers: int) -> tuple[int, int]:
    for layer in range(n_layers):
        for kind, rank in KIND_ORDER.items():
            if state_address(spec, kind, layer) == address:
                return layer, rank
    raise ValueError(f"{address} is not a traced state")


def _session(model: Any, remote: bool | str):
    return model.session(remote=remote) if remote else model.session()

