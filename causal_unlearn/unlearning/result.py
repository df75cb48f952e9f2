"""What an unlearning run returns: the edited model, its history, and the way back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from causal_unlearn.figures import Plottable
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.unlearning.adapters import ADAPTER_FOLDER, save_adapter
from causal_unlearn.unlearning.objectives import Objective
from causal_unlearn.unlearning.parameters import ParameterSelection
from causal_unlearn.unlearning.processes import Processes
from causal_unlearn.unlearning.sharding import full_tensor


@dataclass
class UnlearnResult(Plottable):
    """The run's outcome. `model` is the caller's model, edited in place; `revert()` puts the
    original weights back bit for bit and `apply()` the edited ones again.

    `history` has one record per optimizer step (each loss term, alpha, learning rate);
    `evaluations` one per evaluation (the same terms on the evaluation rows, plus the forget and
    retain answer-token accuracy and `joint_loss`); `selected_step` is the step whose weights
    the model holds.

    A run with low-rank adapters (`adapter=LoRA(...)`) holds them merged: `original` and
    `edited` are the adapted modules' weights without and with W + B @ A * scaling, and
    `adapter` the trained A and B themselves, named as peft names them.
    """

    model: LoadedModel
    selection: ParameterSelection
    objective: Objective
    settings: dict[str, Any]
    history: list[dict[str, float]]
    evaluations: list[dict[str, float]]
    selected_step: int
    seconds: float
    original: dict[str, Tensor] = field(repr=False)
    edited: dict[str, Tensor] = field(repr=False)
    is_reverted: bool = False
    adapter: dict[str, Tensor] | None = field(default=None, repr=False)

    @property
    def deltas(self) -> dict[str, Tensor]:
        """Edited minus original weights, per trained parameter."""
        return {name: self.edited[name] - self.original[name] for name in self.original}

    def revert(self) -> None:
        """Restore the model's original weights (bit for bit)."""
        self.selection.load(self.original)
        self.is_reverted = True

    def apply(self) -> None:
        """Put the edited weights back after `revert()`."""
        self.selection.load(self.edited)
        self.is_reverted = False

    def edited_model(self) -> LoadedModel:
        """A copy of the model holding the edited weights, whichever weights the model holds now
        (for `audit(original, result.edited_model(), task)`).

        Examples:
            >>> import causal_unlearn as cu
            >>> lm, world = cu.load_model("olmo-tiny-bios"), cu.make_bios_world()
            >>> result = cu.unlearn(lm, world.forget[:4], world.retain[:4], layers=[1], objective="grad_diff", epochs=1,
            ...                     lr=1e-3, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
            >>> result.revert()
            >>> edited = result.edited_model()
            >>> name = result.selection.names[0]
            >>> torch.equal(edited.model.get_parameter(name), result.edited[name])
            True
        """
        edited = self.model.copy()
        with torch.no_grad():
            for name, weight in self.edited.items():
                edited.model.get_parameter(name).copy_(weight)
        return edited

    def to_dataframe(self, table: str = "history"):
        """One row per optimizer step (`table="history"`) or per evaluation (`"evaluations"`),
        as a pandas DataFrame."""
        import pandas as pd

        if table not in ("history", "evaluations"):
            raise ValueError(f"table must be 'history' or 'evaluations', got {table!r}")
        return pd.DataFrame(self.history if table == "history" else self.evaluations)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Save the edited model and tokenizer (loadable with `load_model(folder)`), and
        `unlearning.json` with the settings, the trained parameters and the history. A sharded
        model (`shard_model`) is gathered whole: every process calls this, and rank 0 writes.
        A run with adapters also writes them, unmerged, in peft's format to `folder/adapter`
        (`peft.PeftModel.from_pretrained(original_model, folder / "adapter")`)."""
        folder = Path(folder)
        reverted = self.is_reverted
        self.apply()
        try:
            state = _gathered_state(self.model.model) if self.model.is_sharded else None
            if state is not None and not Processes.current().is_main:
                return folder
            self.model.model.save_pretrained(folder, state_dict=state)
        finally:
            if reverted:
                self.revert()
        self.model.tokenizer.save_pretrained(folder)
        record = dict(
            objective=repr(self.objective), settings=self.settings, layers=self.selection.layers,
            modules=self.selection.modules, parameters=self.selection.names, trainable=self.selection.count,
            selected_step=self.selected_step, seconds=self.seconds, history=self.history, evaluations=self.evaluations,
        )
        if self.adapter is not None:
            record["trainable"] = self.settings["adapter"]["parameters"]
            save_adapter(folder / ADAPTER_FOLDER, self.adapter, self.settings["adapter"])
        (folder / "unlearning.json").write_text(json.dumps(record, indent=1, default=str))
        return folder

    def __repr__(self) -> str:
        last = self.evaluations[-1] if self.evaluations else self.history[-1] if self.history else {}
        shown = ", ".join(f"{k}={v:.3g}" for k, v in last.items() if k not in ("step", "epoch"))
        lora = f", adapter=LoRA(rank={self.settings['adapter']['rank']})" if self.adapter is not None else ""
        return (f"UnlearnResult(objective={self.objective.label!r}, layers={self.selection.layers}, "
                f"modules={self.selection.modules!r}{lora}, steps={len(self.history)}, selected_step={self.selected_step}, "
                f"seconds={self.seconds:.1f}, last: {shown})")


def _gathered_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """The whole state dict of a sharded model, on the CPU (a collective: every process calls it)."""
    return {name: full_tensor(value).cpu() for name, value in model.state_dict().items()}
