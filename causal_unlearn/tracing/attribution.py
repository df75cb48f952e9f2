"""Attribution patching: the first-order (gradient) estimate of the exact heatmap.

Restoring a clean state x_clean in place of the corrupted x changes the metric by about
(x_clean - x) . d metric / d x, taken on the corrupted run. One clean forward, one corrupted
forward and one backward give every cell at once; a window of layers sums its layers' terms.
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor

from causal_unlearn.models.hooks import forward_hooks, residual_tensor
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.engine import TraceScores, clean_run, restored_layers, state_address
from causal_unlearn.tracing.metrics import Metric


def run_attribution(
    lm: LoadedModel,
    input_ids: Int[Tensor, " pos"],
    corrupted: Float[Tensor, "samples pos d_model"],
    metric: Metric,
    *,
    kinds: tuple[str, ...],
    window: int,
) -> TraceScores:
    spec, n_layers, samples = lm.architecture, lm.n_layers, corrupted.shape[0]
    input_ids = input_ids.to(lm.device)
    clean, clean_logits, _ = clean_run(lm, input_ids, kinds)
    addresses = sorted(clean)

    captured: dict[str, Tensor] = {}

    def capture(address):
        def hook(module, args, output):
            captured[address] = residual_tensor(output)

        return hook

    # a leaf of our own, so gradients flow even through a frozen model and no parameter gets a .grad
    embeddings = corrupted.detach().clone().requires_grad_(True)
    hooks = {spec.embedding: lambda m, a, out: embeddings} | {a: capture(a) for a in addresses}
    with forward_hooks(lm.model, hooks), torch.enable_grad():
        logits = lm.model(input_ids=input_ids[None].expand(samples, -1)).logits[:, -1]
        per_sample = metric(logits)
        grads = torch.autograd.grad(per_sample.sum(), [captured[a] for a in addresses])
    # per (address): mean over samples of (clean - corrupted) . gradient, for every position
    effect = {
        a: ((clean[a] - captured[a].detach()) * g).sum(-1).mean(0).to(torch.promote_types(lm.dtype, torch.float32)).cpu()
        for a, g in zip(addresses, grads)
    }
    low = per_sample.detach().mean().item()
    scores = {
        kind: torch.stack(
            [sum(effect[state_address(spec, kind, l)] for l in restored_layers(kind, layer, window, n_layers))
             for layer in range(n_layers)],
            dim=1,
        ) + low
        for kind in kinds
    }
    return TraceScores(metric(clean_logits).item(), low, int(clean_logits.argmax(-1).item()), scores)
