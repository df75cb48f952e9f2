"""Attribution patching (AtP) and its fixes: the first-order estimate of the exact heatmap.

Restoring a clean state x_clean in place of the corrupted x changes the metric by about
(x_clean - x) . d metric / d x, taken on the corrupted run. One clean forward, one corrupted
forward and one backward give every cell at once; a window of layers sums its layers' terms.

The first-order estimate fails where the model saturates. `AttributionFixes` switches four
remedies, each alone or together:

- `log_odds` (metric "prob"): linear in each corrupted copy's log-odds of the answer, then the
  sigmoid exactly, so an estimate stays a probability and a copy already sure of its answer
  stops gaining (the output softmax saturates as attention does);
- `qk_fix` (AtP*, Kramár et al. 2024): a restored hidden state is the next block's input at its
  token, so that block's queries, keys and values there are the clean run's. The next attention's
  probabilities are recomputed with them (the softmax exactly, not its gradient) and its values
  enter by their exact change; every other path stays first order;
- `grad_drop` (AtP*): one more backward per layer, each with the gradient through that layer's
  residual contributions dropped; a cell scores the mean of those estimates' sizes (leaving out
  the layers it restores), with the sign of the plain estimate. It counters a direct and an
  indirect effect that cancel in the gradient but not in the restored run;
- `steps` (integrated gradients, as in EAP-IG, Hanna et al. 2024): the gradients are averaged
  over `steps` points between the corrupted and the clean run (the embeddings interpolated),
  not taken at the corrupted run alone; one more forward and backward per point.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from causal_unlearn.models.hooks import (
    AttentionCall,
    forward_hooks,
    last_position_only,
    record_attention,
    record_outputs,
    replace_output,
    residual_tensor,
    with_residual,
)
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.engine import (
    Switches,
    TraceScores,
    clean_run,
    first_corrupted_position,
    restored_layers,
    state_address,
)
from causal_unlearn.tracing.metrics import Metric

_PATTERN_ELEMENTS = 1 << 24  # recomputed attention probabilities held at once by the QK fix


@dataclass(frozen=True)
class AttributionFixes(Switches):
    """The fixes `method="attribution"` applies to attribution patching (see the module's
    docstring). `AttributionFixes.none()` is plain AtP; the default is the best measured on the
    built-in model (docs/tracing.md, Speed).

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

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps is the number of interpolation points between the corrupted and the clean run "
                             f"(0: the gradient at the corrupted run only), a whole number >= 0; got {self.steps!r}")

    @property
    def alphas(self) -> list[float]:
        """Where the gradients are taken, 0 the corrupted run and 1 the clean one: the midpoints
        of `steps` equal intervals, or the corrupted run alone."""
        return [(k + 0.5) / self.steps for k in range(self.steps)] or [0.0]


@dataclass(frozen=True)
class _Rows:
    """The rows of the batched forward that gradients are taken on: for each interpolation point,
    for each dropped layer (none first, with `grad_drop`), the samples."""

    samples: int
    alphas: list[float]
    drops: list[int]

    @property
    def per_alpha(self) -> int:
        return self.samples * (1 + len(self.drops))

    def __len__(self) -> int:
        return self.per_alpha * len(self.alphas)

    def kept(self, layer: int, device) -> Tensor:
        """The rows whose gradient flows through `layer`'s contributions."""
        drop_group = torch.arange(len(self), device=device) // self.samples % (1 + len(self.drops))
        return drop_group != 1 + self.drops.index(layer)

    def embeddings(self, corrupted: Tensor, clean: Tensor) -> Tensor:
        """Each row's input: the corrupted embeddings moved its alpha of the way to the clean ones."""
        alpha = torch.tensor(self.alphas, device=corrupted.device, dtype=corrupted.dtype).repeat_interleave(self.per_alpha)
        start = corrupted.repeat(len(self) // self.samples, 1, 1)
        return torch.lerp(start, clean.to(corrupted.dtype), alpha[:, None, None])

    def mean_over_alphas(self, per_row: Tensor) -> Tensor:
        """Per (dropped layer, sample): the mean over the interpolation points."""
        return per_row.unflatten(0, (len(self.alphas), self.per_alpha)).mean(0)


def run_attribution(
    lm: LoadedModel,
    input_ids: Int[Tensor, " pos"],
    corrupted: Float[Tensor, "samples pos d_model"],
    metric: Metric,
    *,
    kinds: tuple[str, ...],
    window: int,
    fixes: AttributionFixes = AttributionFixes.none(),
    probability: bool = False,
) -> TraceScores:
    """Every cell's estimate from a clean and a corrupted forward and one batched forward and
    backward, whose rows are the interpolation points and the dropped layers (without `steps`, the
    corrupted forward is those rows' first samples). `probability` says the metric is a
    probability (where `log_odds` applies)."""
    spec, n_layers, samples = lm.architecture, lm.n_layers, corrupted.shape[0]
    input_ids = input_ids.to(lm.device)
    hidden = [state_address(spec, "hidden", layer) for layer in range(n_layers)]
    attention = [spec.attn_module(layer) for layer in range(1, n_layers)] if fixes.qk_fix and "hidden" in kinds else []
    log_odds = fixes.log_odds and probability

    def link(scored: Tensor) -> Tensor:
        return torch.logit(scored, eps=torch.finfo(scored.dtype).eps) if log_odds else scored

    with record_attention(lm.model, attention) as clean_calls:
        clean, clean_logits, _ = clean_run(lm, input_ids, kinds)
    addresses = sorted(clean)
    clean_embeddings = lm.module(spec.embedding)(input_ids)
    # the metric reads the last position only, so the last MLP's other positions have no effect
    # (their gradients are zero): it computes the last position alone, as in the exact engine
    last_mlp = lm.module(spec.mlp_module(n_layers - 1))
    rows = _Rows(samples, fixes.alphas, list(range(n_layers)) if fixes.grad_drop else [])
    # with the gradient at the corrupted run alone, the gradient rows' first samples are that run
    corrupted_run_apart = rows.alphas != [0.0]
    if corrupted_run_apart:
        with torch.no_grad(), replace_output(lm.model, spec.embedding, corrupted), last_position_only(last_mlp), \
                record_attention(lm.model, attention) as corrupted_calls, record_outputs(lm.model, addresses) as states:
            scored = metric(lm.next_token_logits(input_ids[None].expand(samples, -1)))
    captured: dict[str, Tensor] = {}
    hooks = {a: _capturing(captured, a) for a in addresses}
    for layer in rows.drops:
        kept = rows.kept(layer, lm.device)
        for a in (spec.attn_contribution(layer), spec.mlp_contribution(layer)):
            hooks[a] = _capturing(captured, a, kept) if a in hooks else _dropping(kept)
    # a leaf of our own, so gradients flow even through a frozen model and no parameter gets a .grad
    embeddings = rows.embeddings(corrupted, clean_embeddings).detach().requires_grad_(True)
    hooks[spec.embedding] = lambda module, args, output: embeddings
    with ExitStack() as stack:
        stack.enter_context(forward_hooks(lm.model, hooks))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(last_position_only(last_mlp))
        calls = stack.enter_context(record_attention(lm.model, attention))
        logits = lm.next_token_logits(input_ids[None].expand(len(rows), -1))
        if not corrupted_run_apart:
            scored = metric(logits[:samples]).detach()
            states = {a: captured[a][:samples].detach() for a in addresses}
            corrupted_calls = {a: calls[a].first_rows(samples) for a in attention}
        recorded = [getattr(calls[a], name) for a in attention for name in ("query", "key", "value", "probabilities")]
        grads = torch.autograd.grad(link(metric(logits)).sum(), [captured[a] for a in addresses] + recorded,
                                    retain_graph=bool(attention))
        # every row restores from the corrupted run, whichever point its gradient is taken at
        deltas = {a: (clean[a] - states[a]).repeat(len(rows) // samples, 1, 1) for a in addresses}
        effects = {a: rows.mean_over_alphas((deltas[a] * g).sum(-1)) for a, g in zip(addresses, grads)}
        first = first_corrupted_position(clean_embeddings, corrupted)
        for layer, a in enumerate(attention):
            effects[hidden[layer]] += _qk_correction(rows, deltas[hidden[layer]], captured[hidden[layer]], calls[a],
                                                     corrupted_calls[a], clean_calls[a],
                                                     grads[len(addresses) + 4 * layer:][:4], first)
    corrupted_link = link(scored).repeat(1 + len(rows.drops))[:, None]
    low = scored.mean().item()

    def change(kind: str, layer: int) -> Float[Tensor, "drops_samples pos"]:
        total = sum(effects[state_address(spec, kind, l)] for l in restored_layers(kind, layer, window, n_layers))
        return torch.sigmoid(corrupted_link + total) - torch.sigmoid(corrupted_link) if log_odds else total

    def cell_column(kind: str, layer: int) -> Float[Tensor, " pos"]:
        per_drop = change(kind, layer).unflatten(0, (1 + len(rows.drops), samples))
        plain = per_drop[0].mean(0)
        own = set(restored_layers(kind, layer, window, n_layers)) if kind != "hidden" else set()
        dropped = [1 + i for i, l in enumerate(rows.drops) if l not in own]
        if not dropped:
            return plain
        return per_drop[dropped].abs().mean(0).mean(0) * plain.sign()

    float_dtype = torch.promote_types(lm.dtype, torch.float32)
    scores = {
        kind: torch.stack([cell_column(kind, layer) for layer in range(n_layers)], dim=1).to(float_dtype).cpu() + low
        for kind in kinds
    }
    return TraceScores(metric(clean_logits).item(), low, int(clean_logits.argmax(-1).item()), scores)


def _capturing(captured: dict[str, Tensor], address: str, kept: Tensor | None = None):
    """A hook that records the module's residual output; where `kept` is given, the rows it leaves
    out pass that output on without a gradient."""

    drop = _dropping(kept) if kept is not None else None

    def hook(module, args, output):
        captured[address] = residual_tensor(output)
        if drop is not None:
            return drop(module, args, output)

    return hook


def _dropping(kept: Tensor):
    def hook(module, args, output):
        state = residual_tensor(output)
        return with_residual(output, torch.where(kept[:, None, None], state, state.detach()))

    return hook


def _qk_correction(
    rows: _Rows,
    delta: Float[Tensor, "rows pos d_model"],
    state: Float[Tensor, "rows pos d_model"],
    call: AttentionCall,
    corrupted: AttentionCall,
    clean: AttentionCall,
    grads: tuple[Tensor, ...],
    first: int,
) -> Float[Tensor, "drops_samples pos"]:
    """What the QK fix changes in a hidden cell's estimate: its first-order part through the next
    attention's queries, keys and values comes out; in goes the exact change of that attention's
    probabilities and values on the corrupted run when the cell's token gets the clean ones,
    times their gradients (averaged over the interpolation points, as every other gradient)."""
    grad_query, grad_key, grad_value, grad_probabilities = grads
    through_qkv = torch.autograd.grad([call.query, call.key, call.value], state, [grad_query, grad_key, grad_value],
                                      retain_graph=True)[0]
    correction = -rows.mean_over_alphas((delta * through_qkv).sum(-1))
    repeats = rows.per_alpha // rows.samples
    value_change = (clean.value - corrupted.value).repeat(repeats, 1, 1, 1)
    correction += ((value_change * rows.mean_over_alphas(grad_value))).sum((1, 3))
    grad_probabilities = rows.mean_over_alphas(grad_probabilities)
    query, key = corrupted.query, corrupted.key
    n_rows, heads, pos = query.shape[0], query.shape[1], query.shape[2]
    chunk_size = max(1, _PATTERN_ELEMENTS // (n_rows * heads * pos * pos))
    tokens = list(range(first, pos))
    for start in range(0, len(tokens), chunk_size):
        chunk = tokens[start:start + chunk_size]
        pattern = corrupted.pattern(_with_token(query, clean.query, chunk), _with_token(key, clean.key, chunk))
        moved = (pattern.unflatten(0, (len(chunk), n_rows)) - corrupted.probabilities).repeat(1, repeats, 1, 1, 1)
        correction[:, chunk] += (moved * grad_probabilities).sum((2, 3, 4)).T
    return correction


def _with_token(states: Float[Tensor, "rows heads pos d"], clean: Float[Tensor, "1 heads pos d"],
                tokens: list[int]) -> Float[Tensor, "chunk_rows heads pos d"]:
    """For each token t of `tokens`, a copy of `states` with the clean states at t (t-major rows)."""
    at = torch.zeros(len(tokens), states.shape[2], dtype=torch.bool, device=states.device)
    at[torch.arange(len(tokens)), tokens] = True
    mixed = torch.where(at[:, None, None, :, None], clean.to(states.dtype)[None], states[None])
    return mixed.flatten(0, 1)
