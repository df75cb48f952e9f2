"""The exact tracing engine.

Every cell (kind, token t, layer l) of a ROME heatmap is the mean metric over the corrupted
copies when the clean state is restored at token t in the cell's layers. The textbook loop runs
one full forward of batch samples + 1 per cell. This engine gives the same numbers while
- running the clean and the corrupted pass once each;
- batching many cells (x samples) per forward, under `max_batch_tokens`;
- never running cells before the first corrupted position: restoring a state the corruption
  never reached changes nothing, so those cells score `low`;
- never recomputing positions before t: causal attention leaves them as in the corrupted run,
  so their keys and values come from that run's cache and only positions t.. are fed;
- never recomputing blocks below the first one a cell changes: their outputs are the corrupted
  run's, so those blocks return the cached states instead of running. Restoring a block's
  output or its MLP's contribution at token t changes nothing else in that block (its attention
  read the unchanged input), so that block is skipped too: its cached output is patched at t;
- running the last block's MLP on the last position only: the metric reads nothing else;
- unembedding the last position of many batches in one matrix product instead of one per batch.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import torch
from einops import reduce
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from causal_unlearn.models.architectures import ArchitectureSpec
from causal_unlearn.models.hooks import forward_hooks, record_inputs, record_outputs, residual_tensor
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.tracing.metrics import Metric

KINDS = ("hidden", "mlp", "attn")


def restored_layers(kind: str, layer: int, window: int, n_layers: int) -> range:
    """The layers a cell restores: one block output for `hidden`, ROME's window
    [layer - window // 2, layer + ceil(window / 2)) clipped to the model for `mlp` and `attn`.

    Examples:
        >>> restored_layers("mlp", 3, 10, 8), restored_layers("attn", 3, 1, 8), restored_layers("hidden", 3, 10, 8)
        (range(0, 8), range(3, 4), range(3, 4))
    """
    if kind == "hidden":
        return range(layer, layer + 1)
    return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))


def state_address(spec: ArchitectureSpec, kind: str, layer: int) -> str:
    """The module whose output a `kind` cell restores."""
    return {"hidden": spec.block_output, "mlp": spec.mlp_contribution, "attn": spec.attn_contribution}[kind](layer)


@dataclass(frozen=True)
class Cell:
    kind: str
    token: int
    layer: int
    restored: range

    @property
    def first_block(self) -> int:
        """The first block whose computation the restoration changes. A restored block output
        or MLP contribution at the window's first layer only alters that block's output at the
        token, so the block itself need not run; a restored attention output feeds its block's MLP."""
        return self.restored.start + (self.kind != "attn")


@dataclass
class TraceScores:
    """What a tracing method computes; `trace` wraps it into a `TraceResult`."""

    high: float
    low: float
    clean_top1: int
    scores: dict[str, Float[Tensor, "pos layer"]]
    top_ids: dict[str, Int[Tensor, "pos layer k"]] = field(default_factory=dict)
    top_probs: dict[str, Float[Tensor, "pos layer k"]] = field(default_factory=dict)


class CleanRun(NamedTuple):
    states: dict[str, Float[Tensor, "pos d_model"]]  # every state a cell may restore, by address
    logits: Float[Tensor, "1 vocab"]  # at the last position
    unembedding_input: Float[Tensor, "1 pos d_model"]


@torch.no_grad()
def clean_run(lm: LoadedModel, input_ids: Int[Tensor, " pos"], kinds: tuple[str, ...]) -> CleanRun:
    """The clean forward: the states the cells of `kinds` restore, the logits, and what the
    unembedding read."""
    spec = lm.architecture
    addresses = sorted({state_address(spec, k, l) for k in kinds for l in range(lm.n_layers)})
    with record_outputs(lm.model, addresses) as clean, record_inputs(lm.model, [spec.unembedding]) as unembedding_input:
        logits = lm.model(input_ids=input_ids[None]).logits[:, -1]
    return CleanRun({a: state[0] for a, state in clean.items()}, logits, unembedding_input[spec.unembedding])


@torch.no_grad()
def run_exact(
    lm: LoadedModel,
    input_ids: Int[Tensor, " pos"],
    corrupted: Float[Tensor, "samples pos d_model"],
    metric: Metric,
    *,
    kinds: tuple[str, ...],
    window: int,
    max_batch_tokens: int = 8192,
    progress: bool = True,
    top_predictions: int = 0,
) -> TraceScores:
    """Score every cell of `kinds`; with `top_predictions` k > 0 also keep each cell's k most
    probable next tokens (mean probability over the corrupted copies)."""
    spec, n_layers, n_tokens = lm.architecture, lm.n_layers, input_ids.shape[0]
    samples = corrupted.shape[0]
    input_ids = input_ids.to(lm.device)
    clean_states, clean_logits, clean_unembedding_input = clean_run(lm, input_ids, kinds)

    blocks = [spec.block_output(l) for l in range(n_layers)]
    mlps = [spec.mlp_contribution(l) for l in range(n_layers)] if "mlp" in kinds else []
    block_arity: dict[str, int] = {}  # blocks that return (hidden, attention weights, ...) are skipped alike
    arity_hook = {blocks[0]: lambda m, a, out: block_arity.update(n=len(out) if isinstance(out, tuple) else 0)}
    with _replace_embeddings(lm, corrupted), record_outputs(lm.model, blocks + mlps) as corrupted_run, \
            forward_hooks(lm.model, arity_hook):
        output = lm.model(input_ids=input_ids[None].expand(samples, -1), **_forward_kwargs(lm.model, None, use_cache=True))
    prefix_cache = _keys_and_values(output)

    first_corrupted = first_corrupted_position(lm.module(spec.embedding)(input_ids), corrupted)
    cells = [
        Cell(kind, t, layer, restored_layers(kind, layer, window, n_layers))
        for kind in kinds for t in range(first_corrupted, n_tokens) for layer in range(n_layers)
    ]
    chunks = list(_chunks(cells, samples, n_tokens, max_batch_tokens))
    table = _CellTable(kinds, n_tokens, n_layers, torch.promote_types(lm.dtype, torch.float32), metric, top_predictions)
    unembedding = _DeferredUnembedding.for_model(lm, clean_unembedding_input, clean_logits, max_batch_tokens, table.record)
    reuse_prefix = _prefix_reusable(lm, prefix_cache, n_tokens)
    for chunk in tqdm(chunks, desc="tracing", unit="batch", disable=not progress or len(chunks) < 4, leave=False):
        t = chunk[0].token
        start = t if reuse_prefix else 0
        rows = len(chunk) * samples
        restore = _rows_by_address(spec, chunk, samples)
        first = chunk[0].first_block
        with ExitStack() as stack:
            stack.enter_context(_replace_embeddings(lm, corrupted[:, start:].repeat(len(chunk), 1, 1)))
            stack.enter_context(_restore_position(lm.model, t - start, restore, {a: clean_states[a][t] for a in restore}))
            if first > 0:
                entry = _entry_states(spec, chunk, corrupted_run, clean_states, start, samples)
                stack.enter_context(_skip_blocks(lm.model, blocks[:first], entry, block_arity["n"]))
            if first < n_layers:
                stack.enter_context(_last_position_only(lm.module(spec.mlp_module(n_layers - 1))))
            if unembedding:
                stack.enter_context(unembedding.collect(chunk))
            cache = _repeated_prefix_cache(prefix_cache, start, len(chunk)) if start > 0 else None
            logits = lm.model(input_ids=input_ids[start:][None].expand(rows, -1), **_forward_kwargs(lm.model, cache, use_cache=cache is not None)).logits[:, -1]
        if unembedding:
            unembedding.flush()
        else:
            table.record(chunk, logits)
    if unembedding:
        unembedding.flush(force=True)
    low = metric(output.logits[:, -1]).mean().item()
    table.fill_before(first_corrupted, low, output.logits[:, -1])
    return TraceScores(metric(clean_logits).item(), low, int(clean_logits.argmax(-1).item()), table.scores,
                       table.top_ids, table.top_probs)


class _CellTable:
    """Each cell's score and, with `k` > 0, its k most probable next tokens."""

    def __init__(self, kinds: tuple[str, ...], n_tokens: int, n_layers: int, dtype: torch.dtype, metric: Metric, k: int):
        self.metric, self.k = metric, k
        self.scores = {kind: torch.zeros(n_tokens, n_layers, dtype=dtype) for kind in kinds}
        self.top_ids = {kind: torch.zeros(n_tokens, n_layers, k, dtype=torch.long) for kind in kinds} if k else {}
        self.top_probs = {kind: torch.zeros(n_tokens, n_layers, k) for kind in kinds} if k else {}

    def record(self, cells: list[Cell], logits: Float[Tensor, "rows vocab"]) -> None:
        """Score `cells` from their rows' last logits (the corrupted copies of each cell in a row)."""
        per_cell = reduce(self.metric(logits), "(cell sample) -> cell", "mean", cell=len(cells)).cpu()
        for cell, value in zip(cells, per_cell):
            self.scores[cell.kind][cell.token, cell.layer] = value
        if self.k:
            probs, ids = _mean_probs(logits, len(cells)).topk(self.k, dim=-1)
            for cell, cell_ids, cell_probs in zip(cells, ids.cpu(), probs.cpu()):
                self.top_ids[cell.kind][cell.token, cell.layer] = cell_ids
                self.top_probs[cell.kind][cell.token, cell.layer] = cell_probs

    def fill_before(self, position: int, low: float, corrupted_logits: Float[Tensor, "samples vocab"]) -> None:
        """Cells before `position` restore what the corruption never reached: the corrupted run."""
        top = _mean_probs(corrupted_logits, 1)[0].topk(self.k) if self.k else None
        for kind, scores in self.scores.items():
            scores[:position] = low
            if self.k:
                self.top_probs[kind][:position], self.top_ids[kind][:position] = top[0].cpu(), top[1].cpu()


class _DeferredUnembedding:
    """Unembeds the last position of many small forwards at once. With a large vocabulary the
    unembedding of a few dozen rows costs as much as reading its whole weight matrix, so one
    product over hundreds of rows is several times faster. Used only where the model's logits
    are exactly its unembedding's output (no soft-capping or scaling after it)."""

    def __init__(self, module: nn.Module, max_rows: int, record: Callable[[list[Cell], Tensor], None]):
        self.module, self.max_rows, self.record = module, max_rows, record
        self.pending: list[tuple[list[Cell], Tensor]] = []

    @classmethod
    def for_model(cls, lm: LoadedModel, unembedding_input: Tensor, logits: Tensor, max_batch_tokens: int,
                  record: Callable[[list[Cell], Tensor], None]) -> _DeferredUnembedding | None:
        """The deferral for `lm`, or None where its logits are more than the unembedding's output
        (checked on the clean run); `record` receives each batch's cells and last logits."""
        module = lm.module(lm.architecture.unembedding)
        if not torch.allclose(module(unembedding_input[:, -1]).float(), logits.float(), rtol=1e-4, atol=1e-4):
            return None
        # the deferred logits never take more memory than one batch's MLP activations
        return cls(module, max(1, 4 * max_batch_tokens * lm.d_model // logits.shape[-1]), record)

    @contextmanager
    def collect(self, cells: list[Cell]):
        """Inside the block the unembedding stores its input's last position for `cells`."""

        def store(hidden_states, *args, **kwargs):
            self.pending.append((cells, hidden_states[:, -1]))
            return hidden_states[..., :1]  # a placeholder; the real logits come at `flush`

        with _replaced_forward(self.module, store):
            yield

    def flush(self, *, force: bool = False) -> None:
        """Unembed what is pending once it is enough rows (or when `force`d) and record it."""
        if not self.pending or (not force and sum(len(h) for _, h in self.pending) < self.max_rows):
            return
        logits = self.module(torch.cat([h for _, h in self.pending]))
        offset = 0
        for cells, hidden in self.pending:
            self.record(cells, logits[offset : offset + len(hidden)])
            offset += len(hidden)
        self.pending = []


def _mean_probs(logits: Float[Tensor, "rows vocab"], groups: int) -> Float[Tensor, "groups vocab"]:
    """Next-token probabilities averaged over each group's consecutive rows (the corrupted copies)."""
    return reduce(logits.float().softmax(-1), "(group sample) vocab -> group vocab", "mean", group=groups)


def first_corrupted_position(clean: Float[Tensor, "pos d_model"], corrupted: Float[Tensor, "samples pos d_model"]) -> int:
    """The first position whose embedding the corruption changed (the number of tokens if none)."""
    changed = (corrupted != clean).any(dim=-1).any(dim=0)
    positions = changed.nonzero()
    return int(positions[0]) if len(positions) else clean.shape[0]


def _chunks(cells: list[Cell], samples: int, n_tokens: int, max_batch_tokens: int) -> Iterator[list[Cell]]:
    """Batches of cells that share their token (so the prefix cache) and their first changed
    block (so the blocks they skip)."""
    groups: dict[tuple[int, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.token, cell.first_block), []).append(cell)
    for (t, _), group in sorted(groups.items()):
        per_batch = max(1, max_batch_tokens // ((n_tokens - t) * samples))
        for start in range(0, len(group), per_batch):
            yield group[start : start + per_batch]


def _rows_by_address(spec: ArchitectureSpec, chunk: list[Cell], samples: int) -> dict[str, Tensor]:
    rows: dict[str, list[int]] = {}
    for index, cell in enumerate(chunk):
        for layer in cell.restored[cell.kind != "attn" :]:  # the first is patched into the entry state
            rows.setdefault(state_address(spec, cell.kind, layer), []).extend(range(index * samples, (index + 1) * samples))
    return {address: torch.tensor(r) for address, r in rows.items()}


def _with_tensor(output: Tensor | tuple, tensor: Tensor) -> Tensor | tuple:
    return (tensor, *output[1:]) if isinstance(output, tuple) else tensor


def _replace_embeddings(lm: LoadedModel, embeddings: Float[Tensor, "batch pos d_model"]):
    """The embedding module outputs `embeddings` (the corrupted input) instead."""
    return forward_hooks(lm.model, {lm.architecture.embedding: lambda m, a, out: _with_tensor(out, embeddings)})


def _restore_position(model: nn.Module, position: int, rows: dict[str, Tensor], clean: dict[str, Tensor]):
    """At each address, the given rows get the clean state at `position` (of the fed positions)."""

    def hook_for(address: str):
        def hook(module, args, output):
            patched = residual_tensor(output).clone()
            patched[rows[address].to(patched.device), position] = clean[address]
            return _with_tensor(output, patched)

        return hook

    return forward_hooks(model, {a: hook_for(a) for a in rows})


def _entry_states(
    spec: ArchitectureSpec,
    chunk: list[Cell],
    corrupted_run: dict[str, Tensor],
    clean_states: dict[str, Tensor],
    start: int,
    samples: int,
) -> Float[Tensor, "rows fed d_model"]:
    """The output of the last skipped block for every row: the corrupted run's, with each
    hidden or MLP cell's first restoration applied at its token (attention cells start at the
    block they change, so they need none)."""
    below = chunk[0].first_block - 1
    entry = corrupted_run[spec.block_output(below)][:, start:].repeat(len(chunk), 1, 1)
    for index, cell in enumerate(chunk):
        rows, position = slice(index * samples, (index + 1) * samples), cell.token - start
        if cell.kind == "hidden":
            entry[rows, position] = clean_states[spec.block_output(below)][cell.token]
        elif cell.kind == "mlp":  # swap the corrupted contribution for the clean one
            contribution = spec.mlp_contribution(below)
            entry[rows, position] += clean_states[contribution][cell.token] - corrupted_run[contribution][:, cell.token]
    return entry


@contextmanager
def _replaced_forward(module: nn.Module, forward: Callable):
    """`module` runs `forward` instead of its own (its hooks still fire)."""
    # through the instance dict: wrappers such as TransformerLens's BlockBridge redirect setattr
    saved = module.__dict__.get("forward")
    module.__dict__["forward"] = forward
    try:
        yield
    finally:
        if saved is None:
            del module.__dict__["forward"]
        else:
            module.__dict__["forward"] = saved


def _skip_blocks(model: nn.Module, skipped: list[str], entry: Tensor, arity: int) -> ExitStack:
    """The `skipped` blocks do not run: the last returns `entry`, the others pass their input on,
    each as a tuple of `arity` (hidden states first) where the blocks return tuples."""

    def output(hidden_states: Tensor) -> Tensor | tuple:
        return (hidden_states, *[None] * (arity - 1)) if arity else hidden_states

    def passthrough(hidden_states, *args, **kwargs):
        return output(hidden_states)

    stack = ExitStack()
    for address in skipped[:-1]:
        stack.enter_context(_replaced_forward(model.get_submodule(address), passthrough))
    stack.enter_context(_replaced_forward(model.get_submodule(skipped[-1]), lambda *args, **kwargs: output(entry)))
    return stack


def _last_position_only(mlp: nn.Module):
    """The last block's MLP runs on the last position only: the metric reads nothing else, and
    the other positions' outputs of the last block feed nothing (zeros stand in for them)."""
    full = mlp.forward

    def last_position(hidden_states, *args, **kwargs):
        if hidden_states.dim() != 3:  # positions flattened into rows (OPT's MLP): no shortcut
            return full(hidden_states, *args, **kwargs)
        last = full(hidden_states[:, -1:], *args, **kwargs)
        if not isinstance(last, Tensor) or last.shape[-1] != hidden_states.shape[-1]:
            return full(hidden_states, *args, **kwargs)  # an MLP of another shape: no shortcut
        output = last.new_zeros(hidden_states.shape)
        output[:, -1:] = last
        return output

    return _replaced_forward(mlp, last_position)


def _forward_kwargs(model: nn.Module, cache, use_cache: bool) -> dict:
    """The KV cache under the name this transformers release uses (`cache` in 5.2x, earlier
    `past_key_values`), and logits for the last position only where the model supports it: with
    a large vocabulary the unembedding is a good part of a forward."""
    parameters = inspect.signature(model.forward).parameters
    kwargs = {"cache" if "cache" in parameters else "past_key_values": cache, "use_cache": use_cache}
    if "logits_to_keep" in parameters:
        kwargs["logits_to_keep"] = 1
    return kwargs


def attention_window(config) -> int | None:
    """The smallest number of past positions some layer's attention sees (sliding-window or
    chunked attention), or None where every layer sees the whole prefix.

    Examples:
        >>> from transformers import MistralConfig, Qwen2Config
        >>> attention_window(MistralConfig(sliding_window=4096)), attention_window(Qwen2Config())
        (4096, None)
    """
    windows = [getattr(config, name, None) for name in ("sliding_window", "attention_chunk_size")]
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in t or "chunked" in t for t in layer_types):
        return None  # a window in the config that no layer uses (Qwen2 with use_sliding_window=False)
    windows = [w for w in windows if isinstance(w, int) and w > 0]
    return min(windows) if windows else None


def _prefix_reusable(lm: LoadedModel, prefix_cache: list[tuple[Tensor, Tensor]], n_tokens: int) -> bool:
    """Whether the corrupted run's cache holds every layer's keys and values at every position,
    so batches can feed positions t.. only. A bridged model's attention may not fill the cache,
    and a sliding-window layer's cache keeps only its window: then every batch is fed from
    position 0, which is exact for any attention pattern."""
    window = attention_window(lm.model.config)
    if window is not None and n_tokens >= window:
        return False
    return all(k is not None and v is not None and k.shape[-2] == n_tokens for k, v in prefix_cache)


def _keys_and_values(output) -> list[tuple[Tensor, Tensor]]:
    cache = output.cache if getattr(output, "cache", None) is not None else output.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def _repeated_prefix_cache(prefix: list[tuple[Tensor, Tensor]], t: int, copies: int):
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(k[:, :, :t].repeat(copies, 1, 1, 1), v[:, :, :t].repeat(copies, 1, 1, 1))
                                        for k, v in prefix])
