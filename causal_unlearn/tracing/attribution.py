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

from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from functools import partial

import torch
from jaxtyping import Float, Int
from torch import Tensor

from causal_unlearn.models.hooks import (
    AttentionCall,
    HookPoint,
    edit,
    last_position_only,
    record,
    record_attention,
    replace_state,
)
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.patching.relevance import RelevanceRules, relevance_rules
from causal_unlearn.patching.sites import Site
from causal_unlearn.tracing.config import TraceConfig
from causal_unlearn.tracing.engine import clean_run, entry_rule, first_corrupted_position, inside, site_points
from causal_unlearn.tracing.engines import TraceInput, TraceScores, register_engine
from causal_unlearn.tracing.metrics import Metric, checked_scores
from causal_unlearn.tracing.switches import AttributionFixes

_PATTERN_ELEMENTS = 1 << 24  # recomputed attention probabilities held at once by the QK fix


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


def run_attribution_facts(lm: LoadedModel, facts: list[TraceInput], config: TraceConfig, *,
                          progress: bool = True) -> list[TraceScores]:
    """`run_attribution` for each fact."""
    return [run_attribution(lm, fact.input_ids, fact.clean, fact.corrupted, fact.metric, sites=config.sites,
                            window=config.window, fixes=config.fixes) for fact in facts]


def run_attribution(
    lm: LoadedModel,
    input_ids: Int[Tensor, " pos"],
    clean_embeddings: Float[Tensor, "pos d_model"],
    corrupted: Float[Tensor, "samples pos d_model"],
    metric: Metric,
    *,
    sites: tuple[Site, ...],
    window: int,
    fixes: AttributionFixes = AttributionFixes.none(),
) -> TraceScores:
    """Every cell's estimate from a clean and a corrupted forward and one batched forward and
    backward, whose rows are the interpolation points and the dropped layers (without `steps`, the
    corrupted forward is those rows' first samples). `log_odds` applies to a metric that is a
    probability (`metric.is_probability`)."""
    spec, n_layers, samples = lm.architecture, lm.n_layers, corrupted.shape[0]
    input_ids, clean_embeddings = input_ids.to(lm.device), clean_embeddings.to(lm.device)
    points = site_points(lm, sites)
    on_residual = {site: entry_rule(lm, site) == "state" for site in sites}  # the block's whole output
    hidden = [HookPoint(spec.block_output(layer)) for layer in range(n_layers)]
    qk_fix = fixes.qk_fix and any(on_residual.values())
    attention = [spec.attn_module(layer) for layer in range(1, n_layers)] if qk_fix else []
    log_odds = fixes.log_odds and getattr(metric, "is_probability", False)

    def link(scored: Tensor) -> Tensor:
        return torch.logit(scored, eps=torch.finfo(scored.dtype).eps) if log_odds else scored

    with record_attention(lm.model, attention) as clean_calls:
        clean, clean_logits, _ = clean_run(lm, input_ids, sites)
    # the metric reads the last position only, so the last MLP's other positions have no effect
    # (their gradients are zero): it computes the last position alone, as in the exact engine;
    # unless a traced state sits inside that MLP, which then runs in full
    last_mlp = spec.mlp_module(n_layers - 1)
    last_position = nullcontext if inside(points, last_mlp) else partial(last_position_only, lm.module(last_mlp))
    rows = _Rows(samples, fixes.alphas, list(range(n_layers)) if fixes.grad_drop else [])
    # with the gradient at the corrupted run alone, the gradient rows' first samples are that run
    corrupted_run_apart = rows.alphas != [0.0]
    if corrupted_run_apart:
        with torch.no_grad(), replace_state(lm.model, spec.embedding, corrupted), last_position(), \
                record_attention(lm.model, attention) as corrupted_calls, record(lm.model, points) as states:
            scored = checked_scores(metric, lm.next_token_logits(input_ids[None].expand(samples, -1)))
    captured: dict[HookPoint, Tensor] = {}
    edits: dict[HookPoint, list] = {point: [_capturing(captured, point)] for point in points}
    for layer in rows.drops:
        kept = rows.kept(layer, lm.device)
        for contribution in (spec.attn_contribution(layer), spec.mlp_contribution(layer)):
            edits.setdefault(HookPoint(contribution), []).append(_dropping(kept))
    # a leaf of our own, so gradients flow even through a frozen model and no parameter gets a .grad
    embeddings = rows.embeddings(corrupted, clean_embeddings).detach().requires_grad_(True)
    edits[HookPoint(spec.embedding)] = [lambda state: embeddings]
    with ExitStack() as stack:
        if fixes.relp:  # before the edits: the half rule sits upstream of a neuron's recorded state
            stack.enter_context(relevance_rules(lm, RelevanceRules(attention=fixes.relp_attention)))
        stack.enter_context(edit(lm.model, {point: _chained(fns) for point, fns in edits.items()}))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(last_position())
        calls = stack.enter_context(record_attention(lm.model, attention))
        logits = lm.next_token_logits(input_ids[None].expand(len(rows), -1))
        if not corrupted_run_apart:
            scored = checked_scores(metric, logits[:samples]).detach()
            states = {p: captured[p][:samples].detach() for p in points}
            corrupted_calls = {a: calls[a].first_rows(samples) for a in attention}
        recorded = [getattr(calls[a], name) for a in attention for name in ("query", "key", "value", "probabilities")]
        grads = torch.autograd.grad(link(metric(logits)).sum(), [captured[p] for p in points] + recorded,
                                    retain_graph=bool(attention))
        # every row restores from the corrupted run, whichever point its gradient is taken at
        deltas = {p: (clean[p] - states[p]).repeat(len(rows) // samples, 1, 1) for p in points}
        products = {p: deltas[p] * g for p, g in zip(points, grads)}
        effects = {cell_point: rows.mean_over_alphas(cell_point.select(products[cell_point.whole]).sum(-1))
                   for site in sites for cell_point in _cell_points(lm, site)}
        first = first_corrupted_position(clean_embeddings, corrupted)
        for layer, a in enumerate(attention):
            effects[hidden[layer]] += _qk_correction(rows, deltas[hidden[layer]], captured[hidden[layer]], calls[a],
                                                     corrupted_calls[a], clean_calls[a],
                                                     grads[len(points) + 4 * layer:][:4], first)
    corrupted_link = link(scored).repeat(1 + len(rows.drops))[:, None]
    low = scored.mean().item()

    def change(site: Site, layer: int, unit: int | None) -> Float[Tensor, "drops_samples pos"]:
        total = sum(effects[site.point(lm, l, unit)] for l in site.restored_layers(layer, window, n_layers))
        return torch.sigmoid(corrupted_link + total) - torch.sigmoid(corrupted_link) if log_odds else total

    def cell_column(site: Site, layer: int, unit: int | None) -> Float[Tensor, " pos"]:
        per_drop = change(site, layer, unit).unflatten(0, (1 + len(rows.drops), samples))
        plain = per_drop[0].mean(0)
        # dropping a layer's contributions cuts the gradient of a state inside them: leave it out
        own = set() if on_residual[site] else set(site.restored_layers(layer, window, n_layers))
        dropped = [1 + i for i, l in enumerate(rows.drops) if l not in own]
        if not dropped:
            return plain
        return per_drop[dropped].abs().mean(0).mean(0) * plain.sign()

    def table(site: Site) -> Tensor:
        columns = [torch.stack([cell_column(site, layer, unit) for unit in site.units(lm)], dim=-1)
                   for layer in range(n_layers)]
        scores = torch.stack(columns, dim=1)  # pos layer unit
        return scores if site.n_units(lm) else scores[..., 0]

    float_dtype = torch.promote_types(lm.dtype, torch.float32)
    scores = {site.name: table(site).to(float_dtype).cpu() + low for site in sites}
    return TraceScores(metric(clean_logits).item(), low, int(clean_logits.argmax(-1).item()), scores)


register_engine("torch", "attribution", run_attribution_facts)


def _cell_points(lm: LoadedModel, site: Site) -> list[HookPoint]:
    """The states of every (layer, unit) cell of `site`."""
    return [site.point(lm, layer, unit) for layer in range(lm.n_layers) for unit in site.units(lm)]


def _chained(fns: list):
    """One state edit from several, applied in order."""
    if len(fns) == 1:
        return fns[0]

    def run(state: Tensor) -> Tensor:
        for fn in fns:
            changed = fn(state)
            state = state if changed is None else changed
        return state

    return run


def _capturing(captured: dict[HookPoint, Tensor], point: HookPoint):
    """Records the state (in the autograd graph) and hands on a copy: a block may add into a
    sublayer's output in place (Falcon's parallel MLP), which must not change the recorded state."""

    def capture(state: Tensor) -> Tensor:
        captured[point] = state
        return state.clone()

    return capture


def _dropping(kept: Tensor):
    """The rows `kept` leaves out pass the state on without a gradient."""

    def drop(state: Tensor) -> Tensor:
        return torch.where(kept[:, None, None], state, state.detach())

    return drop


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
