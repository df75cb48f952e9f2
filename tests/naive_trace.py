"""A deliberately naive causal trace, written the way ROME's notebook does it: one full forward
per cell, batch of samples + 1 with row 0 clean, the restored states copied from row 0."""

from __future__ import annotations

import pytest
import torch

from causal_unlearn.models.hooks import residual_tensor
from causal_unlearn.tracing import GaussianNoise
from causal_unlearn.tracing.corruption import corrupted_embeddings, embeddings_of
from causal_unlearn.tracing.metrics import make_metric

STATE = {"hidden": "block_output", "mlp": "mlp_contribution", "attn": "attn_contribution"}


def window_layers(kind, layer, window, n_layers):
    """ROME restores `window` consecutive layers around `layer`: window // 2 below it and
    (window - 1) // 2 above (3 -> one each side; 4 -> two below, one above), cut at the model's
    ends. Written as a filter over the layers, not as the engine's range expression."""
    if kind == "hidden":
        return [layer]
    return [other for other in range(n_layers) if -(window // 2) <= other - layer <= (window - 1) // 2]


@torch.no_grad()
def naive_trace(lm, input_ids, corrupted, score, kind, window):
    """`corrupted`: [samples, pos, d_model] embeddings; `score`: logits [rows, vocab] -> [rows]."""
    samples, n_tokens = corrupted.shape[0], input_ids.shape[0]
    batch = input_ids[None].repeat(samples + 1, 1)
    spec = lm.architecture

    def corrupt(module, args, output):
        output = output.clone()
        output[1:] = corrupted
        return output

    def run(restore):  # restore: list of (address, token)
        handles = [lm.module(spec.embedding).register_forward_hook(corrupt)]
        for address, token in restore:
            def patch(module, args, output, token=token):
                tensor = residual_tensor(output)
                tensor[1:, token] = tensor[0, token]
                return output
            handles.append(lm.module(address).register_forward_hook(patch))
        try:
            logits = lm.model(input_ids=batch).logits[:, -1]
        finally:
            for h in handles:
                h.remove()
        return score(logits[1:]).mean().item(), score(logits[:1]).item()

    low, high = run([])
    table = torch.zeros(n_tokens, lm.n_layers)
    for t in range(n_tokens):
        for layer in range(lm.n_layers):
            addresses = [getattr(spec, STATE[kind])(l) for l in window_layers(kind, layer, window, lm.n_layers)]
            table[t, layer] = run([(a, t) for a in addresses])[0]
    return table, low, high


TOL = 1e-5


def assert_matches_naive(lm, result, kinds=None):
    """`result` (Gaussian noise) equals the naive trace with the same corrupted embeddings."""
    scale = result.settings.noise_scale
    corrupted = corrupted_embeddings(embeddings_of(lm, result.input_ids), result.subject_range, GaussianNoise(scale),
                                     samples=result.settings.samples, scale=scale, seed=result.settings.seed)
    score = make_metric(result.settings.metric, result.answer_id)
    for kind in kinds or result.kinds:
        table, low, high = naive_trace(lm, result.input_ids.to(lm.device), corrupted, score, kind, result.settings.window)
        torch.testing.assert_close(result.scores[kind], table, atol=TOL, rtol=0)
        assert result.low == pytest.approx(low, abs=TOL) and result.high == pytest.approx(high, abs=TOL)
