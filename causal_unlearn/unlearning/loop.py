"""`unlearn`: optimize only the selected layers' weights on a forget and a retain set."""

from __future__ import annotations

import math
import time
import warnings
from contextlib import contextmanager
from functools import partial
from statistics import fmean
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from causal_unlearn.data.encoding import EncodedBatch, encode_rows, prompt_vocabulary, with_distinct_prompt_tokens
from causal_unlearn.data.rows import REQUIRED_FIELDS, Row
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.unlearning.objectives import LossInputs, Objective, Terms, get_objective
from causal_unlearn.unlearning.parameters import Modules, ParameterSelection, select_parameters
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.validation import finite, integer

Select = Literal["lowest_joint_loss", "last"]
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
    epochs: int = 8,
    lr: float = 1.5e-5,
    batch_size: int = 12,
    grad_accum: int = 10,
    eval_every: int | None = 4,
    select: Select = "lowest_joint_loss",
    weight_decay: float = 0.0,
    loss_on: Literal["output", "text", "distinct"] = "output",
    max_length: int | None = None,
    seed: int = 0,
    callbacks: Sequence[UnlearnCallback] = (),
    progress: bool = True,
) -> UnlearnResult:
    """Make `model` forget the `forget` rows and keep the `retain` rows, training only the
    `modules` of `layers` (the paper's recipe; its hyper-parameters are the defaults).

    Forget and retain rows are shuffled together; each row is `input + " " + output` and the
    loss reads only the output tokens. `loss_on="text"` reads every token of the row, prompt
    included; `loss_on="distinct"` reads the output plus, in forget rows, the prompt tokens that
    no retain prompt contains (the person's name in LUME; the shared question template is left
    alone). AdamW with linear decay to 0 takes one step per `grad_accum` batches; every `eval_every` steps the objective is evaluated on all rows and,
    with `select="lowest_joint_loss"`, the weights with the lowest evaluated loss are kept.
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
    forget, retain = _as_rows("forget", forget), _as_rows("retain", retain)
    _warn_overlap(forget, retain)
    epochs, batch_size, grad_accum = (_positive(name, value) for name, value in
                                      dict(epochs=epochs, batch_size=batch_size, grad_accum=grad_accum).items())
    if eval_every is not None:
        eval_every = _positive("eval_every", eval_every, " or None")
    if max_length is not None:
        max_length = _positive("max_length", max_length, " or None")
    lr, weight_decay = finite("lr", lr, above=0), finite("weight_decay", weight_decay, at_least=0)
    seed = integer("seed", seed)
    wrong = [c for c in callbacks if not isinstance(c, UnlearnCallback)]
    if wrong:
        raise TypeError(f"callbacks must be UnlearnCallback instances (subclass causal_unlearn.UnlearnCallback), got "
                        f"{wrong[0]!r:.60}")
    if loss_on not in ("output", "text", "distinct"):
        raise ValueError(f"unknown loss_on {loss_on!r}; use 'output' (the paper), 'text' or 'distinct'")
    if select not in ("lowest_joint_loss", "last"):
        raise ValueError(f"unknown select {select!r}; use 'lowest_joint_loss' or 'last'")
    if select == "lowest_joint_loss" and eval_every is None:
        raise ValueError("select='lowest_joint_loss' needs evaluations; set eval_every or use select='last'")
    objective = get_objective(objective)
    objective.reset()
    selection = select_parameters(model, layers, modules)
    objective.begin(model, forget, retain)
    settings = dict(objective=objective.name, layers=selection.layers, modules=modules, epochs=epochs, lr=lr,
                    batch_size=batch_size, grad_accum=grad_accum, eval_every=eval_every, select=select,
                    weight_decay=weight_decay, loss_on=loss_on, seed=seed, n_forget=len(forget), n_retain=len(retain))
    original = selection.snapshot()
    encode = _encoder(model, retain, loss_on, max_length)
    rows = [(row, True) for row in forget] + [(row, False) for row in retain]
    batches_per_epoch = math.ceil(len(rows) / batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / grad_accum)
    total_steps = steps_per_epoch * epochs
    settings["total_steps"] = total_steps

    optimizer = torch.optim.AdamW(selection.parameters.values(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.0, total_iters=total_steps)
    generator = torch.Generator().manual_seed(seed)
    history: list[dict[str, float]] = []
    evaluations: list[dict[str, float]] = []
    best = (math.inf, 0, original)  # joint loss, step, weights
    # the weights before the latest optimizer step (after step `good_step`): their losses were all finite
    last_good, good_step = original, 0
    step, start = 0, time.perf_counter()

    def result(weights: dict[str, Tensor], selected_step: int) -> UnlearnResult:
        selection.load(weights)
        return UnlearnResult(model, selection, objective, settings, history, evaluations, selected_step,
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
        record = {"step": step, "epoch": epoch, **_evaluate(model, objective, selection, original, rows,
                                                            batch_size, encode, epoch)}
        if not math.isfinite(record["joint_loss"]):
            raise diverged(f"the evaluated joint loss became {record['joint_loss']} after optimizer step {step}")
        evaluations.append(record)
        for callback in callbacks:
            callback.on_evaluate(record)
        if record["joint_loss"] < best[0]:
            best = (record["joint_loss"], step, selection.snapshot())

    for callback in callbacks:
        callback.on_train_begin(settings)
    try:
        with _train_only(model, selection), tqdm(total=total_steps, desc=f"unlearning ({objective.name})",
                                                 unit="step", disable=not progress) as bar:
            epoch = 0
            if eval_every is not None:
                evaluate_now()
            for epoch in range(epochs):
                objective.start_epoch(epoch)
                order = torch.randperm(len(rows), generator=generator).tolist()
                batches = [[rows[i] for i in order[b : b + batch_size]] for b in range(0, len(rows), batch_size)]
                for window_start in range(0, len(batches), grad_accum):
                    window = batches[window_start : window_start + grad_accum]
                    window_terms: list[dict[str, float]] = []
                    for index, batch in enumerate(window):
                        terms, _ = _loss_terms(model, objective, selection, original, batch, encode, epoch, training=True)
                        bad = [name for name, value in terms.items() if not torch.isfinite(value).all()]
                        if bad:
                            raise diverged(f"loss term {bad[0]!r} became {float(terms[bad[0]].detach())} at optimizer "
                                           f"step {step + 1} (epoch {epoch}, batch {window_start + index} of the epoch)")
                        (terms["loss"] / len(window)).backward()
                        window_terms.append({name: float(value.detach()) for name, value in terms.items()})
                    last_good, good_step = selection.snapshot(), step
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    broken = next((n for n, p in selection.parameters.items() if not torch.isfinite(p).all()), None)
                    if broken is not None:
                        raise diverged(f"weight {broken!r} became NaN or infinite at optimizer step {step + 1}")
                    step += 1
                    record = {"step": step, "epoch": epoch, "lr": schedule.get_last_lr()[0],
                              **{name: fmean(t[name] for t in window_terms) for name in window_terms[0]}}
                    schedule.step()
                    history.append(record)
                    bar.update()
                    bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k not in ("step", "epoch", "lr")}, refresh=False)
                    for callback in callbacks:
                        callback.on_step(record)
                    if eval_every is not None and (step % eval_every == 0 or step == total_steps):
                        evaluate_now()
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
    final = selection.snapshot()
    outcome = result(best[2] if select == "lowest_joint_loss" else final, best[1] if select == "lowest_joint_loss" else step)
    if select == "lowest_joint_loss" and outcome.selected_step == 0:
        warnings.warn(f"no evaluated step had a lower joint loss than the original weights ({best[0]:.4g} at step 0), "
                      "so the model keeps its original weights; try another lr or objective, or select='last'",
                      stacklevel=2)
    for callback in callbacks:
        callback.on_train_end(outcome)
    return outcome


def _loss_terms(
    model: LoadedModel, objective: Objective, selection: ParameterSelection, original: dict[str, Tensor],
    rows: list[tuple[Row, bool]], encode: Encoder, epoch: int, *, training: bool,
) -> tuple[Terms, LossInputs]:
    is_forget = torch.tensor([is_forget for _, is_forget in rows], device=model.device)
    batch = encode([row for row, _ in rows], is_forget).to(model.device)
    original_logits = partial(_original_logits, model, selection, original)
    reference = original_logits(batch) if objective.needs_reference else None
    with torch.set_grad_enabled(training):
        inputs = LossInputs(_logits(model, batch), batch, is_forget, epoch, training,
                            reference_logits_fn=None if reference is None else lambda: reference,
                            source_rows=[row for row, _ in rows], original_logits_fn=original_logits)
        return objective(inputs), inputs


def _encoder(model: LoadedModel, retain: list[Row], loss_on: str, max_length: int | None) -> Encoder:
    encode = partial(encode_rows, model.tokenizer, max_length=max_length, whole_text=loss_on == "text")
    if loss_on != "distinct":
        return lambda rows, is_forget: encode(rows)
    common = prompt_vocabulary(model.tokenizer, retain)
    return lambda rows, is_forget: with_distinct_prompt_tokens(encode(rows), is_forget.cpu(), common)


def _logits(model: LoadedModel, batch: EncodedBatch) -> Float[Tensor, "batch pos vocab"]:
    return model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits


@torch.no_grad()
def _original_logits(model: LoadedModel, selection: ParameterSelection, original: dict[str, Tensor],
                     batch: EncodedBatch) -> Float[Tensor, "batch pos vocab"]:
    """The original model's logits: the original weights swapped into the trained parameters
    for one forward, so no second copy of the model is held. (Between a forward and its backward
    this is safe: the edited weights are back before autograd reads them.)"""
    with _weights(selection, original):
        return _logits(model, batch)


@torch.no_grad()
def _evaluate(
    model: LoadedModel, objective: Objective, selection: ParameterSelection, original: dict[str, Tensor],
    rows: list[tuple[Row, bool]], batch_size: int, encode: Encoder, epoch: int,
) -> dict[str, float]:
    """The objective's terms on all rows (weighted by batch size) and, per split, the share of
    answer tokens and of whole answers that are the model's top-1 under teacher forcing: a cheap
    stand-in for generation during training."""
    totals: dict[str, float] = {}
    hits = {"forget": 0, "retain": 0}
    counts = {"forget": 0, "retain": 0}
    answers = {"forget": 0, "retain": 0}
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        terms, inputs = _loss_terms(model, objective, selection, original, chunk, encode, epoch, training=False)
        for name, value in terms.items():
            totals[name] = totals.get(name, 0.0) + float(value) * len(chunk)
        mask = inputs.batch.target_mask[:, 1:]
        correct = (inputs.logits[:, :-1].argmax(-1) == inputs.batch.input_ids[:, 1:]) & mask
        whole = (correct == mask).all(-1)
        for split in hits:
            rows_of_split = inputs.rows(split)
            hits[split] += int(correct[rows_of_split].sum())
            counts[split] += int(mask[rows_of_split].sum())
            answers[split] += int(whole[rows_of_split].sum())
    record = {name: total / len(rows) for name, total in totals.items()}
    record["joint_loss"] = record.pop("loss")
    n_rows = {"forget": sum(is_forget for _, is_forget in rows), "retain": sum(not f for _, f in rows)}
    for split in hits:
        record[f"{split}_token_accuracy"] = hits[split] / max(counts[split], 1)
        record[f"{split}_answer_accuracy"] = answers[split] / max(n_rows[split], 1)
    return record


@contextmanager
def _weights(selection: ParameterSelection, weights: dict[str, Tensor]) -> Iterator[None]:
    """Temporarily run with `weights` in the selected parameters (the original model, for
    objectives that compare against it) without a second copy of the model."""
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


def _positive(name: str, value: Any, alternative: str = "") -> int:
    try:
        value = integer(name, value, minimum=1)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer{alternative}, got {value!r}") from None
    return value


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
    return rows


def _warn_overlap(forget: list[Row], retain: list[Row]) -> None:
    shared = {(r.input, r.output) for r in forget} & {(r.input, r.output) for r in retain}
    if shared:
        warnings.warn(
            f"{len(shared)} row(s) are in both the forget and the retain set (e.g. {next(iter(shared))[0][:60]!r}); "
            "their losses pull in opposite directions", stacklevel=3)
