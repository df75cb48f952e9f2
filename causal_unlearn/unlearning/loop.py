"""`unlearn`: optimize only the selected layers' weights on a forget and a retain set."""

from __future__ import annotations

import dataclasses
import math
import warnings
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

from torch import Tensor

from causal_unlearn.data.encoding import encode_rows, prompt_vocabulary, with_distinct_prompt_tokens
from causal_unlearn.data.rows import REQUIRED_FIELDS, Row, row_kind
from causal_unlearn.localization.components import Components
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.models.weights import editing
from causal_unlearn.unlearning.adapters import Adapters, LoRA, adapted, describe, lora_targets
from causal_unlearn.unlearning.config import UnlearnConfig
from causal_unlearn.unlearning.objectives import Objective, get_objective
from causal_unlearn.unlearning.parameters import Modules, ParameterSelection, select_parameters
from causal_unlearn.unlearning.processes import Processes
from causal_unlearn.unlearning.result import UnlearnResult
from causal_unlearn.unlearning.run import (
    Encoder, UnlearnCallback, UnlearningDivergedError, UnlearningInterrupted, UnlearningRun,
)
from causal_unlearn.unlearning.sharding import local_shard


def unlearn(
    model: LoadedModel,
    forget: Sequence[Row],
    retain: Sequence[Row],
    *,
    layers: Sequence[int] | Components,
    modules: Modules = "mlp",
    objective: str | Objective = "sha256",
    config: UnlearnConfig | None = None,
    adapter: LoRA | None = None,
    callbacks: Sequence[UnlearnCallback] = (),
    progress: bool = True,
    **settings: Any,
) -> UnlearnResult:
    """Make `model` forget the `forget` rows and keep the `retain` rows, training only the
    `modules` of `layers` (the paper's recipe; its hyper-parameters are the defaults). `layers`
    may instead be `Components` (from `localize_components`): only those heads' and neurons'
    weights change, every other entry stays bit for bit as it was. With `adapter=LoRA(...)` only
    low-rank adapters on the linear modules of those `modules` train, and the result holds them
    merged into the weights (`result.adapter`: the adapters themselves).

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
    where = {"components": layers.to_dict()} if isinstance(layers, Components) else {}
    objective = get_objective(objective)
    sharded = model.is_sharded
    if sharded and objective.runs_own_forwards:
        raise ValueError(f"the {objective.name} objective runs forwards of its own, as many as each process's rows "
                         "need, and a sharded model (shard_model) needs the same number on every process; train "
                         "it unsharded or choose another objective")
    if adapter is not None and not isinstance(adapter, LoRA):
        raise TypeError(f"adapter must be a LoRA(...) (causal_unlearn.LoRA), got a {type(adapter).__name__}")
    if adapter is not None and isinstance(layers, Components):
        raise ValueError("LoRA adapts whole linear modules and Components edit chosen heads' and neurons' entries; "
                         "pass layers=components.layers with the adapter, or Components without it")
    objective.reset()
    selection = select_parameters(model, layers, modules)
    if adapter is not None:  # checked before any training
        where["adapter"] = describe(adapter, lora_targets(model, selection, adapter), model)
    objective.begin(model, forget, retain, layers=selection.layers)
    rows = [(row, True) for row in forget] + [(row, False) for row in retain]
    steps_per_epoch = math.ceil(math.ceil(len(rows) / config.batch_size) / (config.grad_accum * processes.world))
    total_steps = steps_per_epoch * config.epochs
    run_settings = dict(objective=objective.label, layers=selection.layers, modules=selection.modules, **where,
                        **dataclasses.asdict(config), processes=processes.world, n_forget=len(forget),
                        n_retain=len(retain), total_steps=total_steps)
    for callback in callbacks:
        callback.on_train_begin(run_settings)
    with adapted(model, selection, adapter) if adapter is not None else nullcontext() as adapters:
        trained = selection if adapters is None else adapters.selection
        with editing(model.model, trained.parameters, keep=True) as original:  # any error: the original weights back
            run = UnlearningRun(model, trained, objective, config, rows, original,
                                _encoder(model, retain, config.loss_on, config.max_length), processes=processes,
                                settings=run_settings, callbacks=tuple(callbacks))
            try:
                with _checkpointing(model, config.gradient_checkpointing):
                    run.train(progress=progress)
            except (UnlearningDivergedError, UnlearningInterrupted) as error:
                error.result = _merged(error.result, adapters)
                raise
            except KeyboardInterrupt as interrupt:
                error = run.interrupted()
                error.result = _merged(error.result, adapters)
                raise error from interrupt
            except BaseException as error:
                error.add_note(f"unlearning stopped after {run.step} of {total_steps} optimizer steps; the model "
                               "holds its original weights again")
                raise
        outcome = _merged(run.kept(), adapters)
    if adapters is not None:  # the modules are the model's own again: the merged weights go in
        outcome.apply()
        selection = outcome.selection
        original = outcome.original
    if config.select == "lowest_joint_loss" and outcome.selected_step == 0:
        warnings.warn(f"no evaluated step had a lower joint loss than the original weights ({run.best[0]:.4g} at "
                      "step 0), so the model keeps its original weights; try another lr or objective, or select='last'",
                      stacklevel=2)
    if processes.is_main:
        _warn_if_blown_up(selection, original, config.lr)
        if outcome.selected_step > 0:
            _warn_if_nothing_forgotten(run.evaluations, outcome.selected_step, config)
    for callback in callbacks:
        callback.on_train_end(outcome)
    return outcome


BLOWN_UP = 10.0  # an edit this many times a weight's own size leaves a model that no longer works


def _merged(result: UnlearnResult, adapters: Adapters | None) -> UnlearnResult:
    """A run's result with its adapters merged into the weights they adapt (reverted: the model
    holds its original weights until the adapters are out); without adapters, as it is."""
    if adapters is None:
        return result
    return dataclasses.replace(result, selection=adapters.base, original=adapters.original,
                               edited=adapters.merged(result.edited), adapter=adapters.state_dict(result.edited),
                               is_reverted=True)


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


def _encoder(model: LoadedModel, retain: list[Row], loss_on: str, max_length: int | None) -> Encoder:
    encode = partial(encode_rows, model.tokenizer, max_length=max_length, whole_text=loss_on == "text")
    if loss_on != "distinct":
        return lambda rows, is_forget: encode(rows)
    common = prompt_vocabulary(model.tokenizer, retain)
    return lambda rows, is_forget: with_distinct_prompt_tokens(encode(rows), is_forget.cpu(), common)


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
