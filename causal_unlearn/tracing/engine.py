"""The exact tracing engine.

Every cell (site, token t, layer l[, unit]) of a ROME heatmap is the mean metric over the
corrupted copies when the clean state is restored at token t in the cell's layers. The textbook loop runs
one full forward of batch samples + 1 per cell. This engine gives the same numbers while
- running the clean and the corrupted pass once each;
- batching many cells (x samples) per forward, under `max_batch_tokens`, also cells of
  different facts: cells that feed the same number of positions share a forward, each row
  reading its own fact's prefix cache (masked where the prefixes differ);
- never running cells before the first corrupted position: restoring a state the corruption
  never reached changes nothing, so those cells score `low`;
- never recomputing positions before t: causal attention leaves them as in the corrupted run,
  so their keys and values come from that run's cache and only positions t.. are fed;
- never recomputing blocks below the first one a cell changes: their outputs are the corrupted
  run's, so those blocks return the cached states instead of running. Restoring a block's
  output or its MLP's contribution at token t changes nothing else in that block (its attention
  read the unchanged input), so that block is skipped too: its cached output is patched at t;
- running the last block's MLP on the last position only: the metric reads nothing else
  (unless a restored state sits inside that MLP);
- unembedding the last position of many batches in one matrix product instead of one per batch.

Each shortcut is a named switch (`Shortcuts`) built from the intervention primitives of
`causal_unlearn.patching` (`prefilled_cache`, `skip`, `last_position_only`, `deferred`), as are
the cells themselves (`replace_state`, `patch`), for any `Site`.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from itertools import groupby
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import torch
from einops import reduce
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from causal_unlearn.models.architectures import ArchitectureSpec
from causal_unlearn.models.hooks import (
    HookPoint,
    deferred,
    forward_hooks,
    keys_and_values,
    last_position_only,
    patch,
    prefilled_cache,
    record,
    replace_state,
    skip,
)
from causal_unlearn.models.loader import LoadedModel, last_logits_only
from causal_unlearn.patching.sites import Site
from causal_unlearn.tracing.config import TraceConfig
from causal_unlearn.tracing.engines import Cell, TraceInput, TraceScores, cells_of, register_engine, table_shape
from causal_unlearn.tracing.metrics import Metric, checked_scores


def entry_rule(lm: LoadedModel, site: Site) -> str | None:
    """How a cell's first restoration can be written into the output of the block below it, so
    that block need not run: "state" where the site is the block's whole output (`hidden`),
    "contribution" where it is the MLP's whole contribution, the last term a block adds (`mlp`);
    None for any other site (its block runs)."""
    point = site.point(lm, 0, site.units(lm)[0])
    if point.input or point.features is not None:
        return None
    template, spec = site.template(lm.architecture), lm.architecture
    return {spec.block: "state", spec.mlp_contribution_path: "contribution"}.get(template)


def first_block(lm: LoadedModel, cell: Cell, rule: str | None) -> int:
    """The first block whose computation restoring `cell` changes: blocks below it can return the
    corrupted run's states. A state inside block l changes block l; one the entry takes, the next."""
    start = cell.restored.start
    if rule is not None:
        return start + 1
    module, block = cell.site.point(lm, start).module, lm.architecture.block_output(start)
    return start if module == block or module.startswith(block + ".") else 0


class CleanRun(NamedTuple):
    states: dict[HookPoint, Float[Tensor, "pos d"]]  # every state a cell may restore, whole
    logits: Float[Tensor, "1 vocab"]  # at the last position
    unembedding_input: Float[Tensor, "1 kept d_model"]  # the last position, or every position


def site_points(lm: LoadedModel, sites: Sequence[Site]) -> list[HookPoint]:
    """Every layer's whole state of each site."""
    return list(dict.fromkeys(site.point(lm, layer).whole for site in sites for layer in range(lm.n_layers)))


@torch.no_grad()
def clean_run(lm: LoadedModel, input_ids: Int[Tensor, " pos"], sites: Sequence[Site]) -> CleanRun:
    """The clean forward: the states the cells of `sites` restore, the logits, and what the
    unembedding read."""
    unembedding = HookPoint(lm.architecture.unembedding, input=True)
    with record(lm.model, site_points(lm, sites) + [unembedding]) as clean:
        logits = lm.next_token_logits(input_ids[None])
    unembedding_input = clean.pop(unembedding)
    return CleanRun({point: state[0] for point, state in clean.items()}, logits, unembedding_input)


@torch.no_grad()
def run_exact_facts(lm: LoadedModel, facts: Sequence[TraceInput], config: TraceConfig, *,
                    progress: bool = True, keep: Callable[[Cell], bool] | None = None) -> list[TraceScores]:
    """Score every cell of the config's sites for each fact (with `keep`, only the cells it keeps;
    the others stay 0); with `top_predictions` k > 0 also keep each cell's k most probable next
    tokens (mean probability over the corrupted copies).

    Cells of different facts share a forward where they feed the same number of positions and
    skip the same blocks: each row reads its own fact's prefix cache, the keys past its own
    prefix masked, at its own positions (the numbers equal tracing each fact alone)."""
    spec, n_layers, sites, shortcuts = lm.architecture, lm.n_layers, config.sites, config.shortcuts
    max_batch_tokens = config.max_batch_tokens
    samples = {f.corrupted.shape[0] for f in facts}
    if len(samples) != 1:
        raise ValueError(f"facts traced together need the same number of corrupted copies, got {sorted(samples)}")
    samples = samples.pop()
    blocks = [spec.block_output(l) for l in range(n_layers)]
    rules = {site: entry_rule(lm, site) for site in sites}
    runs = [_FactRuns.of(lm, fact, sites, blocks, "contribution" in rules.values()) for fact in facts]
    reuse_prefix = shortcuts.prefix_cache and all(run.reuse_prefix for run in runs)
    parameters = inspect.signature(lm.model.forward).parameters
    mixed_prefixes = reuse_prefix and "position_ids" in parameters and "attention_mask" in parameters
    first_traced = [run.first_corrupted if shortcuts.skip_uncorrupted else 0 for run in runs]
    cells = [cell for index, run in enumerate(runs)
             for cell in cells_of(lm, sites, config.window, range(first_traced[index], run.n_tokens), fact=index)
             if keep is None or keep(cell)]
    if shortcuts.skip_blocks:
        cells = [replace(cell, skipped=first_block(lm, cell, rules[cell.site])) for cell in cells]
    chunks = list(_chunks(cells, [run.n_tokens for run in runs], samples, max_batch_tokens, reuse_prefix, mixed_prefixes))
    dtype = torch.promote_types(lm.dtype, torch.float32)
    tables = [_CellTable(lm, sites, run.n_tokens, dtype, fact.metric, config.top_predictions)
              for run, fact in zip(runs, facts)]

    def record_scores(chunk: list[Cell], logits: Float[Tensor, "rows vocab"]) -> None:
        offset = 0
        for index, group in groupby(chunk, key=lambda cell: cell.fact):
            group = list(group)
            tables[index].record(group, logits[offset : offset + len(group) * samples])
            offset += len(group) * samples

    clean = runs[0].clean
    prefixes = _Prefixes(runs) if reuse_prefix else None
    points = _Points(lm)
    last_mlp = spec.mlp_module(n_layers - 1)
    unembedding = (_DeferredUnembedding.for_model(lm, clean.unembedding_input, clean.logits, max_batch_tokens,
                                                  record_scores) if shortcuts.deferred_unembedding else None)
    for chunk in tqdm(chunks, desc="tracing", unit="batch", disable=not progress or len(chunks) < 4):
        batch = _Batch.of(lm, chunk, runs, samples, prefixes, points, rules)
        first = chunk[0].skipped
        with ExitStack() as stack:
            stack.enter_context(replace_state(lm.model, spec.embedding, batch.embeddings))
            for point, (rows, values) in batch.restorations.items():
                stack.enter_context(patch(lm.model, point, values, position=batch.restore_position, rows=rows))
            if first > 0:
                stack.enter_context(skip(lm.model, blocks[:first], batch.entry, runs[0].block_arity))
            if first < n_layers and shortcuts.last_position_mlp and not inside(batch.restorations, last_mlp):
                stack.enter_context(last_position_only(lm.module(last_mlp)))
            if unembedding:
                stack.enter_context(unembedding.collect(chunk))
            kwargs = _forward_kwargs(lm.model, batch.cache, use_cache=batch.cache is not None)
            if batch.attention_mask is not None:
                kwargs.update(attention_mask=batch.attention_mask, position_ids=batch.position_ids)
            logits = lm.model(input_ids=batch.input_ids, **kwargs).logits[:, -1]
        if unembedding:
            unembedding.flush()
        else:
            record_scores(chunk, logits)
    if unembedding:
        unembedding.flush(force=True)
    scores = []
    for run, fact, table, first in zip(runs, facts, tables, first_traced):
        low = fact.metric(run.corrupted_logits).mean().item()
        table.fill_before(first, low, run.corrupted_logits)
        scores.append(TraceScores(fact.metric(run.clean.logits).item(), low, int(run.clean.logits.argmax(-1).item()),
                                  table.scores, table.top_ids, table.top_probs))
    return scores


register_engine("torch", "exact", run_exact_facts, batches_facts=True)


class _Points(dict):
    """Each cell's restored states, looked up once per (site, layer, unit)."""

    def __init__(self, lm: LoadedModel):
        super().__init__()
        self.lm = lm

    def of(self, cell: Cell) -> list[HookPoint]:
        key = (cell.site, cell.restored, cell.unit)
        if key not in self:
            self[key] = cell.points(self.lm)
        return self[key]


def inside(points: Iterable[HookPoint], module: str) -> bool:
    """Whether a state sits inside `module` (or at its input), which then must run in full: the
    last MLP computes the last position alone only where nothing is read or written inside it."""
    return any(p.module.startswith(module + ".") or (p.module == module and p.input) for p in points)


@dataclass
class _FactRuns:
    """What one fact's cells read: its clean run, its corrupted run's block and MLP outputs and
    keys and values, and where its corruption starts."""

    input_ids: Int[Tensor, " pos"]
    corrupted: Float[Tensor, "samples pos d_model"]
    clean: CleanRun
    corrupted_states: dict[str, Float[Tensor, "samples pos d_model"]]
    corrupted_logits: Float[Tensor, "samples vocab"]
    prefix_cache: list[tuple[Tensor, Tensor]]
    first_corrupted: int
    block_arity: int  # blocks that return (hidden, attention weights, ...) are skipped alike
    reuse_prefix: bool

    @property
    def n_tokens(self) -> int:
        return self.input_ids.shape[0]

    @classmethod
    def of(cls, lm: LoadedModel, fact: TraceInput, sites: Sequence[Site], blocks: list[str],
           contributions: bool) -> _FactRuns:
        """`contributions`: also keep the corrupted run's MLP contributions (for `mlp` cells' entries)."""
        spec, samples = lm.architecture, fact.corrupted.shape[0]
        input_ids = fact.input_ids.to(lm.device)
        clean = clean_run(lm, input_ids, sites)
        mlps = [spec.mlp_contribution(l) for l in range(lm.n_layers)] if contributions else []
        arity: dict[str, int] = {}
        arity_hook = {blocks[0]: lambda m, a, out: arity.update(n=len(out) if isinstance(out, tuple) else 0)}
        with replace_state(lm.model, spec.embedding, fact.corrupted), record(lm.model, blocks + mlps) as states, \
                forward_hooks(lm.model, arity_hook):
            output = lm.model(input_ids=input_ids[None].expand(samples, -1), **_forward_kwargs(lm.model, None, use_cache=True))
        prefix_cache = keys_and_values(output)
        first = first_corrupted_position(fact.clean.to(fact.corrupted.device), fact.corrupted)
        return cls(input_ids, fact.corrupted, clean, states, output.logits[:, -1], prefix_cache, first, arity["n"],
                   _prefix_reusable(lm, prefix_cache, input_ids.shape[0]))


class _Batch(NamedTuple):
    """One forward's inputs: the cells' rows (`samples` corrupted copies each), fed from the
    cells' tokens where the prefix cache is reused."""

    input_ids: Int[Tensor, "rows fed"]
    embeddings: Float[Tensor, "rows fed d_model"]
    restore_position: int
    restorations: dict[HookPoint, tuple[Int[Tensor, " restored"], Float[Tensor, "restored d"]]]  # rows, clean states
    entry: Float[Tensor, "rows fed d_model"] | None
    cache: object | None
    attention_mask: Int[Tensor, "rows keys"] | None  # where prefixes of different lengths are padded
    position_ids: Int[Tensor, "rows fed"] | None

    @classmethod
    def of(cls, lm: LoadedModel, chunk: list[Cell], runs: list[_FactRuns], samples: int, prefixes: _Prefixes | None,
           points: _Points, rules: dict[Site, str | None]) -> _Batch:
        starts = [cell.token if prefixes else 0 for cell in chunk]
        fed = [(runs[cell.fact], start) for cell, start in zip(chunk, starts)]
        input_ids = torch.cat([run.input_ids[start:].expand(samples, -1) for run, start in fed])
        embeddings = torch.cat([run.corrupted[:, start:] for run, start in fed])
        restorations = _restorations(chunk, runs, samples, points, rules)
        entry = _entry_states(lm.architecture, chunk, runs, starts, samples, rules) if chunk[0].skipped > 0 else None
        cache, mask, positions = (prefixes.caches([(cell.fact, start) for cell, start in zip(chunk, starts)],
                                                  input_ids.shape[1], input_ids.device)
                                  if prefixes else (None, None, None))
        return cls(input_ids, embeddings, chunk[0].token - starts[0], restorations, entry, cache, mask, positions)


class _CellTable:
    """Each cell's score and, with `k` > 0, its k most probable next tokens."""

    def __init__(self, lm: LoadedModel, sites: Sequence[Site], n_tokens: int, dtype: torch.dtype, metric: Metric,
                 k: int):
        self.metric, self.k = metric, k
        shapes = {site.name: table_shape(lm, site, n_tokens) for site in sites}
        self.scores = {name: torch.zeros(shape, dtype=dtype) for name, shape in shapes.items()}
        self.top_ids = {name: torch.zeros(*shape, k, dtype=torch.long) for name, shape in shapes.items()} if k else {}
        self.top_probs = {name: torch.zeros(*shape, k) for name, shape in shapes.items()} if k else {}

    def record(self, cells: list[Cell], logits: Float[Tensor, "rows vocab"]) -> None:
        """Score `cells` from their rows' last logits (the corrupted copies of each cell in a row)."""
        per_cell = reduce(checked_scores(self.metric, logits), "(cell sample) -> cell", "mean", cell=len(cells)).cpu()
        for cell, value in zip(cells, per_cell):
            self.scores[cell.site.name][cell.index] = value
        if self.k:
            probs, ids = _mean_probs(logits, len(cells)).topk(self.k, dim=-1)
            for cell, cell_ids, cell_probs in zip(cells, ids.cpu(), probs.cpu()):
                self.top_ids[cell.site.name][cell.index] = cell_ids
                self.top_probs[cell.site.name][cell.index] = cell_probs

    def fill_before(self, position: int, low: float, corrupted_logits: Float[Tensor, "samples vocab"]) -> None:
        """Cells before `position` restore what the corruption never reached: the corrupted run."""
        top = _mean_probs(corrupted_logits, 1)[0].topk(self.k) if self.k else None
        for kind, scores in self.scores.items():
            scores[:position] = low
            if self.k:
                self.top_probs[kind][:position], self.top_ids[kind][:position] = top[0].cpu(), top[1].cpu()


class _DeferredUnembedding:
    """Unembeds the last position of many small forwards at once (`deferred`). Used only where
    the model's logits are exactly its unembedding's output (no soft-capping or scaling after it)."""

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
        with deferred(self.module) as inputs:
            yield
        self.pending.extend((cells, hidden) for hidden in inputs)

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


def _chunks(cells: list[Cell], lengths: list[int], samples: int, max_batch_tokens: int, reuse_prefix: bool,
            mixed_prefixes: bool) -> Iterator[list[Cell]]:
    """Batches of cells that feed the same positions, restore at the same fed position and skip
    the same blocks. With the prefix cache reused, a cell feeds its token on; cells of prefixes
    of different lengths share a batch only where the model takes a padding mask and positions."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        start = cell.token if reuse_prefix else 0
        prefix = cell.token if reuse_prefix and not mixed_prefixes else 0  # without a mask, one prefix length
        key = (lengths[cell.fact] - start, cell.token - start, cell.skipped, prefix)
        groups.setdefault(key, []).append(cell)
    for (fed, *_), group in sorted(groups.items()):
        per_batch = max(1, max_batch_tokens // (fed * samples))
        for start in range(0, len(group), per_batch):
            yield group[start : start + per_batch]


def _restorations(chunk: list[Cell], runs: list[_FactRuns], samples: int, points: _Points,
                  rules: dict[Site, str | None]) -> dict[HookPoint, tuple[Tensor, Tensor]]:
    """At each state, the rows restored there and the clean state each gets (its fact's, at its
    token). A cell whose first restoration the entry takes skips it here."""
    rows: dict[HookPoint, list[int]] = {}
    clean: dict[HookPoint, list[Tensor]] = {}
    for index, cell in enumerate(chunk):
        into_entry = cell.skipped > 0 and rules[cell.site] is not None
        for point in points.of(cell)[into_entry:]:
            rows.setdefault(point, []).extend(range(index * samples, (index + 1) * samples))
            state = point.select(runs[cell.fact].clean.states[point.whole][cell.token])
            clean.setdefault(point, []).append(state.expand(samples, -1))
    return {point: (torch.tensor(rows[point]), torch.cat(clean[point])) for point in rows}


def _entry_states(
    spec: ArchitectureSpec,
    chunk: list[Cell],
    runs: list[_FactRuns],
    starts: list[int],
    samples: int,
    rules: dict[Site, str | None],
) -> Float[Tensor, "rows fed d_model"]:
    """The output of the last skipped block for every row: its fact's corrupted run, with each
    cell's first restoration applied at its token where its site allows (`entry_rule`); other
    cells start at the block they change, so they need none."""
    below = chunk[0].skipped - 1
    block, contribution = spec.block_output(below), spec.mlp_contribution(below)
    entries = []
    for cell, start in zip(chunk, starts):
        run, position, rule = runs[cell.fact], cell.token - start, rules[cell.site]
        entry = run.corrupted_states[block][:, start:].clone()
        if rule == "state":
            entry[:, position] = run.clean.states[HookPoint(block)][cell.token]
        elif rule == "contribution":  # swap the corrupted contribution for the clean one
            entry[:, position] += (run.clean.states[HookPoint(contribution)][cell.token]
                                   - run.corrupted_states[contribution][:, cell.token])
        entries.append(entry)
    return torch.cat(entries)


def _forward_kwargs(model: nn.Module, cache, use_cache: bool) -> dict:
    """The KV cache under the name this transformers release uses (`cache` in 5.2x, earlier
    `past_key_values`), and logits for the last position only where the model supports it: with
    a large vocabulary the unembedding is a good part of a forward."""
    parameters = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in parameters else "past_key_values": cache, "use_cache": use_cache} | last_logits_only(model)


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


class _Prefixes:
    """The corrupted runs' keys and values of the facts traced together, stacked per layer as
    [fact x sample, heads, longest prompt, head dim] (shorter prompts padded at the end), so a
    batch's prefix caches are one row selection per layer instead of a copy per row."""

    def __init__(self, runs: list[_FactRuns]):
        longest = max(run.n_tokens for run in runs)

        def stacked(tensors: list[Tensor]) -> Tensor:
            return torch.cat([torch.nn.functional.pad(t, (0, 0, 0, longest - t.shape[-2])) for t in tensors])

        self.layers = [(stacked([k for k, _ in layer]), stacked([v for _, v in layer]))
                       for layer in zip(*[run.prefix_cache for run in runs])]
        self.samples = runs[0].corrupted.shape[0]

    def caches(self, fed: list[tuple[int, int]], n_fed: int, device: torch.device):
        """The cache for rows fed from (fact, start) on, None where nothing precedes, with the
        attention mask and positions where the starts differ. Each row's cache holds its fact's
        keys and values at [0, longest start) (those at or past its own start masked) and room
        for the `n_fed` positions the forward writes; the order of keys does not matter to
        attention once the mask and the positions say which key is where."""
        longest = max(start for _, start in fed)
        if longest == 0:
            return None, None, None
        rows = torch.cat([fact * self.samples + torch.arange(self.samples) for fact, _ in fed]).to(device)
        end = longest + n_fed
        cache = prefilled_cache([(k[:, :, :end].index_select(0, rows), v[:, :, :end].index_select(0, rows))
                                 for k, v in self.layers], filled=longest)
        if all(start == longest for _, start in fed):
            return cache, None, None
        keys = torch.arange(end, device=device)
        mask = torch.cat([((keys < start) | (keys >= longest)).expand(self.samples, -1) for _, start in fed]).long()
        positions = torch.cat([(start + torch.arange(n_fed, device=device)).expand(self.samples, -1) for _, start in fed])
        return cache, mask, positions
