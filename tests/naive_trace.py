"""A deliberately naive causal trace, written the way ROME's notebook does it: one full forward
per cell, batch of samples + 1 with row 0 clean, the restored states copied from row 0. It
knows each site by the architecture spec's paths alone (not the library's Site objects)."""

from __future__ import annotations

import pytest
import torch

from causal_unlearn.tracing import GaussianNoise
from causal_unlearn.tracing.corruption import corrupted_embeddings, embeddings_of

# site -> (spec path, the module's input?)
PLACES = {"hidden": ("block", False), "mlp": ("mlp_contribution_path", False), "attn": ("attn_contribution_path", False),
          "resid_pre": ("block", True), "head": ("attn_output_projection_path", True)}
WINDOWED = ("mlp", "attn")


def window_layers(kind, layer, window, n_layers):
    """ROME restores `window` consecutive layers around `layer`: window // 2 below it and
    (window - 1) // 2 above (3 -> one each side; 4 -> two below, one above), cut at the model's
    ends. Written as a filter over the layers, not as the engine's range expression."""
    if kind not in WINDOWED:
        return [layer]
    return [other for other in range(n_layers) if -(window // 2) <= other - layer <= (window - 1) // 2]


def score_of(metric: str, answer_id: int):
    """The built-in metrics, written out."""
    if metric == "prob":
        return lambda logits: torch.softmax(logits.float(), -1)[:, answer_id]
    if metric == "logprob":
        return lambda logits: torch.log_softmax(logits.float(), -1)[:, answer_id]
    raise ValueError(metric)


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def naive_trace(lm, input_ids, corrupted, score, kind, window, neurons=None):
    """`corrupted`: [samples, pos, d_model] embeddings; `score`: logits [rows, vocab] -> [rows].
    Returns the (pos, layer) or, for heads, (pos, layer, head) table, low and high."""
    samples, n_tokens = corrupted.shape[0], input_ids.shape[0]
    batch = input_ids[None].repeat(samples + 1, 1)
    spec = lm.architecture
    path, is_input = PLACES.get(kind, ("mlp_down_projection_path", True))
    template = getattr(spec, path)
    n_heads = lm.model.config.num_attention_heads

    def corrupt(module, args, output):
        output = output.clone()
        output[1:] = corrupted
        return output

    def copy_row0(tensor, token, columns):
        tensor[1:, token, columns] = tensor[0, token, columns]

    def run(restore):  # restore: list of (module address, token, columns)
        handles = [lm.module(spec.embedding).register_forward_hook(corrupt)]
        for address, token, columns in restore:
            module = lm.module(address)
            if is_input:
                handles.append(module.register_forward_pre_hook(
                    lambda m, args, token=token, columns=columns: copy_row0(args[0], token, columns)))
            else:
                handles.append(module.register_forward_hook(
                    lambda m, args, output, token=token, columns=columns: copy_row0(_first(output), token, columns)))
        try:
            logits = lm.model(input_ids=batch).logits[:, -1]
        finally:
            for h in handles:
                h.remove()
        return score(logits[1:]).mean().item(), score(logits[:1]).item()

    low, high = run([])
    width = lm.module(template.format(layer=0))
    width = getattr(width, "in_features", None) or getattr(width, "nx", None)
    units = list(range(n_heads)) if kind == "head" else [None]
    table = torch.zeros(n_tokens, lm.n_layers, len(units))
    for t in range(n_tokens):
        for layer in range(lm.n_layers):
            for u in units:
                if kind == "head":
                    columns = slice(u * width // n_heads, (u + 1) * width // n_heads)
                else:
                    columns = list(neurons) if neurons is not None else slice(None)
                addresses = [template.format(layer=l) for l in window_layers(kind, layer, window, lm.n_layers)]
                table[t, layer, u or 0] = run([(a, t, columns) for a in addresses])[0]
    return (table if kind == "head" else table[..., 0]), low, high


TOL = 1e-5


def assert_matches_naive(lm, result, kinds=None, neurons=None):
    """`result` (Gaussian noise) equals the naive trace with the same corrupted embeddings."""
    scale = result.settings.noise_scale
    corrupted = corrupted_embeddings(embeddings_of(lm, result.input_ids), result.subject_range, GaussianNoise(scale),
                                     samples=result.settings.samples, scale=scale, seed=result.settings.seed)
    score = score_of(result.settings.metric, result.answer_id)
    for kind in kinds or result.kinds:
        table, low, high = naive_trace(lm, result.input_ids.to(lm.device), corrupted, score, kind,
                                       result.settings.window, neurons=neurons if kind.startswith("mlp_neurons") else None)
        torch.testing.assert_close(result.scores[kind], table, atol=TOL, rtol=0)
        assert result.low == pytest.approx(low, abs=TOL) and result.high == pytest.approx(high, abs=TOL)
