"""One unlearning run: train steps on the selected parameters, evaluations, a stop that every
process sees, and the weights to keep. `unlearn` checks its inputs, builds a run and trains it."""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import EncodedBatch
from causal_unlearn.data.rows import Row
from causal_unlearn.models.hooks import edit
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.unlearning.config import UnlearnConfig
from causal_unlearn.unlearning.objectives import LossInputs, Objective, Terms
from causal_unlearn.unlearning.parameters import ParameterSelection
from causal_unlearn.unlearning.processes import Processes
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.unlearning.sharding import full_tensor, local_shard, reshard

Encoder = Callable[[list[Row], Tensor], EncodedBatch]  # rows, which of them are forget rows
Window = list[list[tuple[Row, bool]]]  # the micro-batches of one optimizer step


class UnlearningDivergedError(RuntimeError):
    """A loss term or a trained weight became NaN or infinite. The model holds its original
    weights again; `result` is the run up to the last step whose losses and weights were all
    finite (`error.result.apply()` puts those weights in the model)."""

    def __init__(self, message: str, result: UnlearnResult):
        super().__init__(message)
        self.result = result


class UnlearningInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, the notebook's stop button, a callback). The model holds
    its original weights again; `result` is the run up to the last completed step
    (`error.result.apply()` puts those weights in the model)."""

    def __init__(self, message: str, result: UnlearnResult):
        super().__init__(message)
        self.result = result


class UnlearnCallback:
    """Hooks into a run; override any of them (e.g. a live dashboard)."""

    def on_train_begin(self, settings: Mapping[str, Any]) -> None: ...

    def on_step(self, record: Mapping[str, float]) -> None: ...

    def on_evaluate(self, record: Mapping[str, float]) -> None: ...

    def on_train_end(self, result: UnlearnResult) -> None: ...


class UnlearningRun:
    """The state of one run over `rows` (each a row and whether it is a forget row): the optimizer
    and its schedule, the records so far, the best evaluated weights and the last weights whose
    losses were all finite. The model holds the trained weights as they move; `original` is the
    snapshot they started from (the caller restores it on any error: `models.weights.editing`)."""

    def __init__(self, model: LoadedModel, selection: ParameterSelection, objective: Objective, config: UnlearnConfig,
                 rows: list[tuple[Row, bool]], original: dict[str, Tensor], encode: Encoder, *,
                 processes: Processes, settings: dict[str, Any], callbacks: tuple[UnlearnCallback, ...] = ()):
        self.model, self.selection, self.objective, self.config = model, selection, objective, config
        self.rows, self.original, self.processes, self.settings = rows, original, processes, settings
        self.callbacks = callbacks
        self.sharded = model.is_sharded
        self.forward = _Forward(model, selection, original, objective, encode, config.mixed_precision, self.sharded)
        self.micro_batches_per_step = config.grad_accum * processes.world
        self.total_steps = settings["total_steps"]
        self.optimizer = torch.optim.AdamW(selection.parameters.values(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LinearLR(self.optimizer, 1.0, 0.0, total_iters=self.total_steps)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.history: list[dict[str, float]] = []
        self.evaluations: list[dict[str, float]] = []
        self.best = (math.inf, 0, original)  # joint loss, step, weights
        # the weights before the latest optimizer step (after step `good_step`): their losses were all finite
        self.last_good, self.good_step = original, 0
        self.step, self.epoch, self.start = 0, 0, time.perf_counter()

    def result(self, weights: dict[str, Tensor], selected_step: int, *, reverted: bool = False) -> UnlearnResult:
        """The run so far, with `weights` as its edit (in the model unless `reverted`)."""
        if not reverted:
            self.selection.load(weights)
        return UnlearnResult(self.model, self.selection, self.objective, self.settings, self.history,
                             self.evaluations, selected_step, time.perf_counter() - self.start, self.original, weights,
                             is_reverted=reverted)

    def stopped(self) -> UnlearnResult:
        """The run up to the last step whose losses and weights were all finite; the caller puts the
        original weights back."""
        return self.result(self.last_good, self.good_step, reverted=True)

    def kept(self) -> UnlearnResult:
        """The finished run, holding the weights `config.select` keeps."""
        if self.config.select == "lowest_joint_loss":
            return self.result(self.best[2], self.best[1])
        return self.result(self.selection.snapshot(), self.step)

    def diverged(self, what: str) -> UnlearningDivergedError:
        self.optimizer.zero_grad(set_to_none=True)
        return UnlearningDivergedError(
            f"{what}; the model holds its original weights again. Lower lr, or call error.result.apply() for the "
            f"weights after step {self.good_step}, the last whose losses and weights were all finite.", self.stopped())

    def interrupted(self) -> UnlearningInterrupted:
        return UnlearningInterrupted(
            f"unlearning was interrupted after {self.step} of {self.total_steps} optimizer steps; the model holds its "
            f"original weights again (error.result.apply() puts in the weights after step {self.good_step})",
            self.stopped())

    def train(self, *, progress: bool) -> None:
        """Every epoch's optimizer steps, with the evaluations `config.eval_every` asks for."""
        config = self.config
        with tqdm(total=self.total_steps, desc=f"unlearning ({self.objective.label})", unit="step",
                  disable=not progress or not self.processes.is_main) as bar:
            if config.eval_every is not None:
                self.evaluate()
            for epoch in range(config.epochs):
                self.epoch = epoch
                self.objective.start_epoch(epoch)
                batches = self.batches()
                for first in range(0, len(batches), self.micro_batches_per_step):
                    record = self.train_step(batches[first : first + self.micro_batches_per_step], first)
                    self.step += 1
                    self.schedule.step()
                    self.history.append(record)
                    bar.update()
                    bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k not in ("step", "epoch", "lr")},
                                    refresh=False)
                    for callback in self.callbacks:
                        callback.on_step(record)
                    if config.eval_every is not None and (self.step % config.eval_every == 0
                                                          or self.step == self.total_steps):
                        self.evaluate()
                self.objective.synchronize(self.processes.gather)
                self.objective.end_epoch(epoch)

    def batches(self) -> Window:
        """This epoch's micro-batches: the rows shuffled (forget and retain together)."""
        size = self.config.batch_size
        order = torch.randperm(len(self.rows), generator=self.generator).tolist()
        return [[self.rows[i] for i in order[b : b + size]] for b in range(0, len(self.rows), size)]

    def evaluate(self) -> None:
        record = {"step": self.step, "epoch": self.epoch,
                  **_evaluate(self.forward, self.rows, self.config.batch_size, self.epoch, self.processes)}
        if not math.isfinite(record["joint_loss"]):
            raise self.diverged(f"the evaluated joint loss became {record['joint_loss']} after optimizer step {self.step}")
        self.evaluations.append(record)
        for callback in self.callbacks:
            callback.on_evaluate(record)
        if record["joint_loss"] < self.best[0]:
            self.best = (record["joint_loss"], self.step, self.selection.snapshot())

    def train_step(self, window: Window, first_batch: int) -> dict[str, float]:
        """One optimizer step on this process's share of `window`; returns the step's record."""
        processes, sharded, selection = self.processes, self.sharded, self.selection
        window_terms: list[dict[str, float]] = []
        bad = None
        # a sharded model's gradients are averaged over the processes by FSDP: scaled to the sum
        scale = processes.world / len(window) if sharded else 1 / len(window)
        for index, batch in enumerate(processes.share(window, pad=sharded)):
            if batch is None:  # this process has fewer micro-batches than another
                self.forward.idle(window[0], training=True)
                continue
            terms, _ = self.forward.terms(batch, self.epoch, training=True)
            broken = [name for name, value in terms.items() if not torch.isfinite(value).all()]
            if broken and bad is None:
                bad = (f"loss term {broken[0]!r} became {float(terms[broken[0]].detach())} at optimizer step "
                       f"{self.step + 1} (epoch {self.epoch}, batch {first_batch + processes.rank + index * processes.world} "
                       "of the epoch)")
            if bad is not None and not sharded:  # sharded, every backward is a collective: all must run
                break
            (terms["loss"] * scale).backward()
            window_terms.append({name: float(value.detach()) for name, value in terms.items()})
        if processes.any(bad is not None, self.model.device):  # every process stops together
            raise self.diverged(bad or "a loss term became NaN or infinite on another process")
        self.last_good, self.good_step = selection.snapshot(), self.step
        if not sharded:
            gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in selection.parameters.values()]
            processes.sum_(gradients)
            for p, gradient in zip(selection.parameters.values(), gradients):
                p.grad = gradient
        selection.mask_gradients()
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm is not None else math.inf
        norm = torch.nn.utils.clip_grad_norm_(list(selection.parameters.values()), max_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        selection.confine(self.original)
        broken_weight = next((n for n, p in selection.parameters.items() if not torch.isfinite(local_shard(p)).all()),
                             None)
        if processes.any(broken_weight is not None, self.model.device) if sharded else broken_weight is not None:
            raise self.diverged(f"weight {broken_weight or 'shard on another process'!r} became NaN or infinite at "
                                f"optimizer step {self.step + 1}")
        means = _mean_terms(window_terms, processes)
        return {"step": self.step + 1, "epoch": self.epoch, "lr": self.schedule.get_last_lr()[0], **means,
                "grad_norm": float(full_tensor(norm))}


def _mean_terms(window_terms: list[dict[str, float]], processes: Processes) -> dict[str, float]:
    """Each loss term's mean over the step's micro-batches, on every process."""
    names = sorted({name for terms in window_terms for name in terms})
    names = sorted(set(processes.gather(names))) if processes.world > 1 else names  # a process may have had none
    totals = torch.tensor([[sum(t[n] for t in window_terms) for n in names] + [len(window_terms)]], dtype=torch.float64)
    processes.sum_([totals])
    return {name: float(totals[0, i] / totals[0, -1]) for i, name in enumerate(names)}


class _Forward:
    """The model's forwards during a run: the trained model's, and the original's (the original
    weights swapped into the trained parameters for one forward, so no second copy is held)."""

    def __init__(self, model: LoadedModel, selection: ParameterSelection, original: dict[str, Tensor],
                 objective: Objective, encode: Encoder, mixed_precision: str, sharded: bool):
        self.model, self.selection, self.original, self.objective, self.encode = model, selection, original, objective, encode
        self.sharded = sharded
        self.mixed = mixed_precision == "bf16"
        self.autocast = partial(torch.autocast, device_type=model.device.type, dtype=torch.bfloat16, enabled=self.mixed)

    def logits(self, batch: EncodedBatch, states: dict[str, Tensor] | None = None) -> Float[Tensor, "batch pos vocab"]:
        """The model's logits; into `states`, if given, the outputs of the modules the objective
        `reads` (keeping their gradient)."""
        def keep(address: str) -> Callable[[Tensor], None]:
            def store(state: Tensor) -> None:
                states[address] = state.clone()  # a block may add into its output in place later

            return store

        reads = self.objective.reads if states is not None else ()
        with self.autocast(), edit(self.model.model, {address: keep(address) for address in reads}):
            logits = self.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return logits.float() if self.mixed else logits  # the losses in fp32, not in bf16

    @torch.no_grad()
    def original_logits(self, batch: EncodedBatch,
                        states: dict[str, Tensor] | None = None) -> Float[Tensor, "batch pos vocab"]:
        """(Between a forward and its backward this is safe: the edited weights are back before
        autograd reads them.)"""
        with _weights(self.model, self.selection, self.original, sharded=self.sharded):
            return self.logits(batch, states)

    def idle(self, rows: list[tuple[Row, bool]], *, training: bool) -> None:
        """The forwards (and backward) of a micro-batch without any effect, for a sharded model:
        each forward gathers weights from every process, so every process runs as many."""
        batch = self.encode([row for row, _ in rows], torch.tensor([f for _, f in rows])).to(self.model.device)
        if self.objective.needs_reference:
            self.original_logits(batch)
        with torch.set_grad_enabled(training):
            logits = self.logits(batch)
        if training:
            (logits.sum() * 0).backward()

    def terms(self, rows: list[tuple[Row, bool]], epoch: int, *, training: bool) -> tuple[Terms, LossInputs]:
        is_forget = torch.tensor([is_forget for _, is_forget in rows], device=self.model.device)
        batch = self.encode([row for row, _ in rows], is_forget).to(self.model.device)
        states: dict[str, Tensor] = {}
        reference_states: dict[str, Tensor] = {}
        reference = self.original_logits(batch, reference_states) if self.objective.needs_reference else None
        with torch.set_grad_enabled(training):
            inputs = LossInputs(self.logits(batch, states), batch, is_forget, epoch, training,
                                reference_logits_fn=None if reference is None else lambda: reference,
                                source_rows=[row for row, _ in rows], original_logits_fn=self.original_logits,
                                states=states, reference_states=reference_states)
            return self.objective(inputs), inputs


SPLITS = ("forget", "retain")


@torch.no_grad()
def _evaluate(forward: _Forward, rows: list[tuple[Row, bool]], batch_size: int, epoch: int,
              processes: Processes) -> dict[str, float]:
    """The objective's terms on all rows (weighted by batch size) and, per split, the share of
    answer tokens and of whole answers that are the model's top-1 under teacher forcing: a cheap
    stand-in for generation during training. The processes share the batches."""
    totals: dict[str, float] = {}
    counts = {f"{split}_{what}": 0 for split in SPLITS for what in ("hits", "tokens", "answers")}
    chunks = [rows[b : b + batch_size] for b in range(0, len(rows), batch_size)]
    for chunk in processes.share(chunks, pad=forward.sharded):
        if chunk is None:
            forward.idle(chunks[0], training=False)
            continue
        terms, inputs = forward.terms(chunk, epoch, training=False)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(chunk)
        mask = inputs.batch.target_mask[:, 1:]
        correct = (inputs.logits[:, :-1].argmax(-1) == inputs.batch.input_ids[:, 1:]) & mask
        whole = (correct == mask).all(-1)
        for split in SPLITS:
            rows_of_split = inputs.rows(split)
            counts[f"{split}_hits"] += int(correct[rows_of_split].sum())
            counts[f"{split}_tokens"] += int(mask[rows_of_split].sum())
            counts[f"{split}_answers"] += int(whole[rows_of_split].sum())
    totals.update(counts)
    names = sorted(set(processes.gather(list(totals)))) if processes.world > 1 else sorted(totals)
    summed = torch.tensor([totals.get(name, 0.0) for name in names], dtype=torch.float64)
    processes.sum_([summed])
    totals = dict(zip(names, summed.tolist()))
    record = {name: totals[name] / len(rows) for name in names if name not in counts}
    record["joint_loss"] = record.pop("loss")
    n_rows = {"forget": sum(is_forget for _, is_forget in rows), "retain": sum(not f for _, f in rows)}
    for split in SPLITS:
        record[f"{split}_token_accuracy"] = totals[f"{split}_hits"] / max(totals[f"{split}_tokens"], 1)
        record[f"{split}_answer_accuracy"] = totals[f"{split}_answers"] / max(n_rows[split], 1)
    return record


@contextmanager
def _weights(model: LoadedModel, selection: ParameterSelection, weights: dict[str, Tensor], *,
             sharded: bool) -> Iterator[None]:
    """Temporarily run with `weights` in the selected parameters (the original model, for
    objectives that compare against it) without a second copy of the model."""
    if sharded:  # FSDP gathers from the shards' own storage: copy into it, and regather
        current = selection.snapshot()
        selection.load(weights)
        reshard(model)
        try:
            yield
        finally:
            reshard(model)
            selection.load(current)
        return
    current = {name: p.data for name, p in selection.parameters.items()}
    for name, p in selection.parameters.items():
        p.data = weights[name]
    try:
        yield
    finally:
        for name, p in selection.parameters.items():
            p.data = current[name]
