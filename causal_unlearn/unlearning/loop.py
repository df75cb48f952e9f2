"""`unlearn`: optimize only the selected layers' weights on a forget and a retain set."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import EncodedBatch, encode_rows, prompt_vocabulary, with_distinct_prompt_tokens
from causal_unlearn.data.rows import REQUIRED_FIELDS, Row, row_kind
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.unlearning.objectives import LossInputs, Objective, Terms, get_objective
from causal_unlearn.unlearning.parameters import Modules, ParameterSelection, select_parameters
from causal_unlearn.unlearning.config import UnlearnConfig
from causal_unlearn.unlearning.processes import Processes
from causal_unlearn.unlearning.sharding import full_tensor, local_shard, reshard
from causal_unlearn.unlearning.result import UnlearnResult

Encoder = Callable[[list[Row], Tensor], EncodedBatch]  # rows, which of them are forget rows


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


def unlearn(
    model: LoadedModel,
    forget: Sequence[Row],
    retain: Sequence[Row],
    *,
    layers: Sequence[int],
    modules: Modules = "mlp",
    objective: str | Objective = "sha256",
    config: UnlearnConfig | None = None,
    callbacks: Sequence[UnlearnCallback] = (),
    progress: bool = True,
    **settings: Any,
) -> UnlearnResult:
    """Make `model` forget the `forget` rows and keep the `retain` rows, training only the
    `modules` of `layers` (the paper's recipe; its hyper-parameters are the defaults).

    How it trains is an `UnlearnConfig` (`config=`), or its fields as keywords (`lr=1e-3`), which
    override the config's. Forget and retain rows are shuffled together; each row is
    `input + " " + output` and the loss reads only the output tokens (see `UnlearnConfig.loss_on`).
    AdamW with linear decay to 0 takes one step per `grad_accum` micro-batches, after clipping
    the gradient norm; every `eval_every` steps the objective is evaluated on all rows and,
    with `select="lowest_joint_loss"`, the weights with the lowest evaluated loss are kept.
    Under `accelerate launch` or `torchrun` the micro-batches of a step and the evaluation rows
    are shared among the processes and the gradients summed: N processes end with the weights
    one process gets with N times the `grad_accum`.

    The model is edited in place; `result.revert()` restores it bit for bit. A run that stops
    early (a NaN or infinite loss or weight: `UnlearningDivergedError`; an interrupt:
    `UnlearningInterrupted`; any other error) leaves the model with its original weights, and the
    error's `result` holds the run so far.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
        >>> result = cu.unlearn(lm, world.forget[:12], world.retain[:12], layers=[0, 1], objective="grad_diff",
        ...                     epochs=2, lr=1e-3, batch_size=4, grad_accum=1, progress=False)
        >>> result.evaluations[-1]["forget_ce"] > result.evaluations[0]["forget_ce"]
        True
        >>> result.revert()
    """
    if not isinstance(model, LoadedModel):
        raise TypeError(f"unlearn edits a loaded model in place; load it first (lm = causal_unlearn.load_model(...)) "
                        f"and pass that, not a {type(model).__name__}, so that you keep the edited model")
    if config is not None and not isinstance(config, UnlearnConfig):
        raise TypeError(f"config must be an UnlearnConfig, got a {type(config).__name__}; pass settings as "
                        "UnlearnConfig(...) or as keywords")
    config = (config or UnlearnConfig()).replace(**settings)
    forget, retain = _as_rows("forget", forget), _as_rows("retain", retain)
    _warn_overlap(forget, retain)
    wrong = [c for c in callbacks if not isinstance(c, UnlearnCallback)]
    if wrong:
        raise TypeError(f"callbacks must be UnlearnCallback instances (subclass causal_unlearn.UnlearnCallback), got "
                        f"{wrong[0]!r:.60}")
    processes = Processes.current()
    objective = get_objective(objective)
    sharded = model.is_sharded
    if sharded and objective.runs_own_forwards:
        raise ValueError(f"the {objective.name} objective runs forwards of its own, as many as each process's rows "
                         "need, and a sharded model (shard_model) needs the same number on every process; train "
                         "it unsharded or choose another objective")
    objective.reset()
    selection = select_parameters(model, layers, modules)
    objective.begin(model, forget, retain)
    rows = [(row, True) for row in forget] + [(row, False) for row in retain]
    micro_batches_per_step = config.grad_accum * processes.world
    steps_per_epoch = math.ceil(math.ceil(len(rows) / config.batch_size) / micro_batches_per_step)
    total_steps = steps_per_epoch * config.epochs
    run_settings = dict(objective=objective.label, layers=selection.layers, modules=modules,
                        **dataclasses.asdict(config), processes=processes.world, n_forget=len(forget),
                        n_retain=len(retain), total_steps=total_steps)
    original = selection.snapshot()  # sharded: this process's shards
    forward = _Forward(model, selection, original, objective, _encoder(model, retain, config.loss_on, config.max_length),
                       config.mixed_precision, sharded)

    optimizer = torch.optim.AdamW(selection.parameters.values(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=total_steps)
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    evaluations: list[dict[str, float]] = []
    best = (math.inf, 0, original)  # joint loss, step, weights
    # the weights before the latest optimizer step (after step `good_step`): their losses were all finite
    last_good, good_step = original, 0
    step, epoch, start = 0, 0, time.perf_counter()

    def result(weights: dict[str, Tensor], selected_step: int) -> UnlearnResult:
        selection.load(weights)
        return UnlearnResult(model, selection, objective, run_settings, history, evaluations, selected_step,
                             time.perf_counter() - start, original, weights)

    def stopped() -> UnlearnResult:
        """The run so far, with the original weights back in the model."""
        so_far = result(last_good, good_step)
        so_far.revert()
        return so_far

    def diverged(what: str) -> UnlearningDivergedError:
        optimizer.zero_grad(set_to_none=True)
        return UnlearningDivergedError(
            f"{what}; the model holds its original weights again. Lower lr, or call error.result.apply() for the "
            f"weights after step {good_step}, the last whose losses and weights were all finite.", stopped())

    def evaluate_now() -> None:
        nonlocal best
        record = {"step": step, "epoch": epoch, **_evaluate(forward, rows, config.batch_size, epoch, processes)}
        if not math.isfinite(record["joint_loss"]):
            raise diverged(f"the evaluated joint loss became {record['joint_loss']} after optimizer step {step}")
        evaluations.append(record)
        for callback in callbacks:
            callback.on_evaluate(record)
        if record["joint_loss"] < best[0]:
            best = (record["joint_loss"], step, selection.snapshot())

    def train_step(window: list[list[tuple[Row, bool]]], first_batch: int) -> dict[str, float]:
        """One optimizer step on this process's share of `window`; returns the step's record."""
        nonlocal last_good, good_step
        window_terms: list[dict[str, float]] = []
        bad = None
        # a sharded model's gradients are averaged over the processes by FSDP: scaled to the sum
        scale = processes.world / len(window) if sharded else 1 / len(window)
        for index, batch in enumerate(processes.share(window, pad=sharded)):
            if batch is None:  # this process has fewer micro-batches than another
                forward.idle(window[0], training=True)
                continue
            terms, _ = forward.terms(batch, epoch, training=True)
            broken = [name for name, value in terms.items() if not torch.isfinite(value).all()]
            if broken and bad is None:
                bad = (f"loss term {broken[0]!r} became {float(terms[broken[0]].detach())} at optimizer step "
                       f"{step + 1} (epoch {epoch}, batch {first_batch + processes.rank + index * processes.world} "
                       "of the epoch)")
            if bad is not None and not sharded:  # sharded, every backward is a collective: all must run
                break
            (terms["loss"] * scale).backward()
            window_terms.append({name: float(value.detach()) for name, value in terms.items()})
        if processes.any(bad is not None, model.device):  # every process stops together
            raise diverged(bad or "a loss term became NaN or infinite on another process")
        last_good, good_step = selection.snapshot(), step
        if not sharded:
            gradients = [p.grad if p.grad is not None else torch.zeros_like(p) for p in selection.parameters.values()]
            processes.sum_(gradients)
            for p, gradient in zip(selection.parameters.values(), gradients):
                p.grad = gradient
        norm = torch.nn.utils.clip_grad_norm_(list(selection.parameters.values()),
                                              config.max_grad_norm if config.max_grad_norm is not None else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        broken_weight = next((n for n, p in selection.parameters.items() if not torch.isfinite(local_shard(p)).all()), None)
        if processes.any(broken_weight is not None, model.device) if sharded else broken_weight is not None:
            raise diverged(f"weight {broken_weight or 'shard on another process'!r} became NaN or infinite at "
                           f"optimizer step {step + 1}")
        means = _mean_terms(window_terms, processes)
        return {"step": step + 1, "epoch": epoch, "lr": schedule.get_last_lr()[0], **means,
                "grad_norm": float(full_tensor(norm))}

    for callback in callbacks:
        callback.on_train_begin(run_settings)
    try:
        with _train_only(model, selection), _checkpointing(model, config.gradient_checkpointing), \
                tqdm(total=total_steps, desc=f"unlearning ({objective.label})", unit="step",
                     disable=not progress or not processes.is_main) as bar:
            if config.eval_every is not None:
                evaluate_now()
            for epoch in range(config.epochs):
                objective.start_epoch(epoch)
                order = torch.randperm(len(rows), generator=generator).tolist()
                batches = [[rows[i] for i in order[b : b + config.batch_size]]
                           for b in range(0, len(rows), config.batch_size)]
                for first in range(0, len(batches), micro_batches_per_step):
                    record = train_step(batches[first : first + micro_batches_per_step], first)
                    step += 1
                    schedule.step()
                    history.append(record)
                    bar.update()
                    bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k not in ("step", "epoch", "lr")},
                                    refresh=False)
                    for callback in callbacks:
                        callback.on_step(record)
                    if config.eval_every is not None and (step % config.eval_every == 0 or step == total_steps):
                        evaluate_now()
                objective.synchronize(processes.gather)
                objective.end_epoch(epoch)
    except (UnlearningDivergedError, UnlearningInterrupted):
        raise
    except KeyboardInterrupt as interrupt:
        raise UnlearningInterrupted(
            f"unlearning was interrupted after {step} of {total_steps} optimizer steps; the model holds its original "
            f"weights again (error.result.apply() puts in the weights after step {good_step})", stopped()) from interrupt
    except BaseException as error:
        stopped()
        error.add_note(f"unlearning stopped after {step} of {total_steps} optimizer steps; the model holds its "
                       "original weights again")
        raise
    lowest = config.select == "lowest_joint_loss"
    outcome = result(best[2] if lowest else selection.snapshot(), best[1] if lowest else step)
    if lowest and outcome.selected_step == 0:
        warnings.warn(f"no evaluated step had a lower joint loss than the original weights ({best[0]:.4g} at step 0), "
                      "so the model keeps its original weights; try another lr or objective, or select='last'",
                      stacklevel=2)
    if processes.is_main:
        _warn_if_blown_up(selection, original, config.lr)
        if outcome.selected_step > 0:
            _warn_if_nothing_forgotten(evaluations, outcome.selected_step, config)
    for callback in callbacks:
        callback.on_train_end(outcome)
    return outcome


BLOWN_UP = 10.0  # an edit this many times a weight's own size leaves a model that no longer works


def _warn_if_blown_up(selection: ParameterSelection, original: dict[str, Tensor], lr: float) -> None:
    """A warning where the kept weights moved by many times their own size: finite, so nothing
    failed, but no model survives that (e.g. a learning rate far too large, without evaluations
    to notice)."""
    # sharded, each process holds (and compares) its own shard of every weight
    name, ratio = max(((n, float((local_shard(p.detach()) - local_shard(original[n])).norm()
                                 / local_shard(original[n]).norm().clamp_min(1e-12)))
                       for n, p in selection.parameters.items()), key=lambda item: item[1])
    if ratio > BLOWN_UP:
        warnings.warn(f"the edit moved {name} by {ratio:.3g} times its own size: the model is almost surely broken "
                      f"(lr={lr:g}); result.revert() restores it, and a smaller lr or evaluations (eval_every) keep "
                      "a usable step", stacklevel=3)


def _warn_if_nothing_forgotten(evaluations: list[dict[str, float]], selected: int, config: UnlearnConfig) -> None:
    """A warning where the kept weights still give every forget answer the original gave (teacher
    forced): the run was too short or its steps too small for this data, e.g. a recipe made for
    thousands of rows run on a handful (few optimizer steps at a small lr)."""
    kept = next((e for e in evaluations if e["step"] == selected), None)
    if kept is None or evaluations[0]["step"] != 0 or evaluations[0]["forget_answer_accuracy"] == 0:
        return  # without evaluations (eval_every=None) there is nothing to compare
    first = evaluations[0]
    if kept["forget_answer_accuracy"] >= first["forget_answer_accuracy"]:
        warnings.warn(
            f"after {selected} optimizer step(s) the model still gives every forget answer it gave before "
            f"(teacher-forced answer accuracy {first['forget_answer_accuracy']:.2f} -> "
            f"{kept['forget_answer_accuracy']:.2f}): the run was too short or its steps too small for these rows "
            f"(lr={config.lr:g}, {config.epochs} epochs, {config.batch_size} x {config.grad_accum} rows a step); "
            "raise lr or epochs", stacklevel=3)


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

    def logits(self, batch: EncodedBatch) -> Float[Tensor, "batch pos vocab"]:
        with self.autocast():
            logits = self.model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return logits.float() if self.mixed else logits  # the losses in fp32, not in bf16

    @torch.no_grad()
    def original_logits(self, batch: EncodedBatch) -> Float[Tensor, "batch pos vocab"]:
        """(Between a forward and its backward this is safe: the edited weights are back before
        autograd reads them.)"""
        with _weights(self.model, self.selection, self.original, sharded=self.sharded):
            return self.logits(batch)

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
        reference = self.original_logits(batch) if self.objective.needs_reference else None
        with torch.set_grad_enabled(training):
            inputs = LossInputs(self.logits(batch), batch, is_forget, epoch, training,
                                reference_logits_fn=None if reference is None else lambda: reference,
                                source_rows=[row for row, _ in rows], original_logits_fn=self.original_logits)
            return self.objective(inputs), inputs


def _encoder(model: LoadedModel, retain: list[Row], loss_on: str, max_length: int | None) -> Encoder:
    encode = partial(encode_rows, model.tokenizer, max_length=max_length, whole_text=loss_on == "text")
    if loss_on != "distinct":
        return lambda rows, is_forget: encode(rows)
    common = prompt_vocabulary(model.tokenizer, retain)
    return lambda rows, is_forget: with_distinct_prompt_tokens(encode(rows), is_forget.cpu(), common)


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
def _checkpointing(model: LoadedModel, enabled: bool) -> Iterator[None]:
    """Gradient checkpointing of the blocks for the run. Transformers checkpoints a block only in
    training mode, so only the blocks are flagged as training: dropout inside them stays off."""
    if not enabled:
        yield
        return
    hf = model.model
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(hf).__name__} does not support gradient checkpointing; set gradient_checkpointing=False")
    from transformers.modeling_layers import GradientCheckpointingLayer

    was_on = getattr(hf, "is_gradient_checkpointing", False)
    hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    blocks = [m for m in hf.modules() if isinstance(m, GradientCheckpointingLayer)]
    flags = [block.training for block in blocks]
    for block in blocks:
        block.training = True
    try:
        yield
    finally:
        for block, flag in zip(blocks, flags):
            block.training = flag
        if not was_on:
            hf.gradient_checkpointing_disable()


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


@contextmanager
def _train_only(model: LoadedModel, selection: ParameterSelection) -> Iterator[None]:
    """Only the selected parameters require grad (so only they get gradients and optimizer
    state); every flag is restored afterwards."""
    flags = {p: p.requires_grad for p in model.model.parameters()}
    chosen = {id(p) for p in selection.parameters.values()}
    for p in model.model.parameters():
        p.requires_grad_(id(p) in chosen)
    try:
        yield
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def _as_rows(name: str, items: Sequence[Row | Mapping[str, str]]) -> list[Row]:
    if not items:
        raise ValueError(f"the {name} set is empty; unlearning needs rows to {'forget' if name == 'forget' else 'keep'}")
    rows = []
    for index, item in enumerate(items):
        if isinstance(item, Row):
            rows.append(item)
            continue
        if not isinstance(item, Mapping):
            raise TypeError(f"{name} row {index} is a {type(item).__name__}; rows are causal_unlearn.Row objects or "
                            f"dicts with the fields {list(REQUIRED_FIELDS)}")
        missing = [f for f in REQUIRED_FIELDS if f not in item]
        if missing:
            raise ValueError(f"{name} row {index} is missing field(s) {missing}; every row needs {list(REQUIRED_FIELDS)}")
        rows.append(Row(**{f: item[f] for f in REQUIRED_FIELDS}))
    empty = [i for i, row in enumerate(rows) if not row.output.strip()]
    if empty:
        raise ValueError(f"{name} rows {empty[:5]} have an empty output: there is nothing to train on")
    for index, row in enumerate(rows):  # what `evaluate` will need to score them, checked before training
        try:
            row_kind(row.id)
        except ValueError as error:
            raise ValueError(f"{name} row {index}: {error}; evaluate scores rows by that kind, so name them as LUME "
                             "does (e.g. 'p1qa0', 'story7sc1')") from None
    return rows


def _warn_overlap(forget: list[Row], retain: list[Row]) -> None:
    shared = {(r.input, r.output) for r in forget} & {(r.input, r.output) for r in retain}
    if shared:
        warnings.warn(
            f"{len(shared)} row(s) are in both the forget and the retain set (e.g. {next(iter(shared))[0][:60]!r}); "
            "their losses pull in opposite directions", stacklevel=3)
