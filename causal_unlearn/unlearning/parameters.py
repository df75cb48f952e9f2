"""Which weights unlearning may change: the MLP and/or attention of chosen layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

import torch
from torch import Tensor, nn

from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.validation import integer

Modules = Literal["mlp", "attn", "all", "mlp_down"]
MODULES: tuple[str, ...] = ("mlp", "attn", "all", "mlp_down")


@dataclass
class ParameterSelection:
    """The named parameters that will train, and their share of the model.

    Examples:
        >>> import causal_unlearn as cu
        >>> selection = cu.select_parameters(cu.load_model("olmo-tiny-bios"), [0, 1])
        >>> selection.count, f"{selection.share:.1%}", selection.names[0]
        (393216, '17.3%', 'model.layers.0.mlp.gate_proj.weight')
    """

    layers: list[int]
    modules: str
    parameters: dict[str, nn.Parameter]
    total: int

    @property
    def names(self) -> list[str]:
        return list(self.parameters)

    @property
    def count(self) -> int:
        return sum(p.numel() for p in self.parameters.values())

    @property
    def share(self) -> float:
        return self.count / self.total

    def __repr__(self) -> str:
        return (f"ParameterSelection(layers={self.layers}, modules={self.modules!r}, tensors={len(self.parameters)}, "
                f"count={self.count:,}, share={self.share:.2%})")

    def snapshot(self) -> dict[str, Tensor]:
        """Detached copies of the selected weights, to restore bit for bit later."""
        return {name: p.detach().clone() for name, p in self.parameters.items()}

    @torch.no_grad()
    def load(self, weights: dict[str, Tensor]) -> None:
        """Copy `weights` (from `snapshot`) back into the selected parameters."""
        for name, p in self.parameters.items():
            p.copy_(weights[name])


def check_layers(layers: Iterable[int], n_layers: int) -> list[int]:
    """Sorted, distinct layer indices (Python, numpy or torch integers); an error naming any that is
    not an integer or out of range."""
    if isinstance(layers, str):
        example = [int(p) for p in layers.replace(",", " ").split() if p.strip().isdigit()] or [0, 7]
        raise TypeError(f"layers must be integers in a list, e.g. layers={example}, got the string {layers!r:.40}")
    if not isinstance(layers, Iterable):
        raise TypeError(f"layers must be integers in a list, e.g. layers=[{layers!r:.20}], got {layers!r:.40}")
    layers = list(layers)
    if not layers:
        raise ValueError("no layers given; pass e.g. layers=[0, 1, 2] or the result of causal_unlearn.localize(...)")
    layers = [_layer_index(layer) for layer in layers]
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise ValueError(f"layers {bad} are out of range: this model has layers 0..{n_layers - 1}")
    return sorted(set(layers))


def _layer_index(layer) -> int:
    try:
        return integer("a layer", layer)
    except TypeError:
        raise TypeError(f"layers must be integers; got {layer!r} ({type(layer).__name__})") from None


def select_parameters(model: LoadedModel, layers: Iterable[int], modules: Modules = "mlp") -> ParameterSelection:
    """The parameters of `modules` ("mlp", "attn", "all" = the whole block, norms included, or
    "mlp_down" = the MLP's down/output projection alone, what closed-form editing changes) in
    `layers`; everything else (embeddings, unembedding, other layers) stays frozen.

    Examples:
        >>> import causal_unlearn as cu
        >>> cu.select_parameters(cu.load_model("olmo-tiny-bios"), [7], modules="attn").names[0]
        'model.layers.7.self_attn.q_proj.weight'
        >>> cu.select_parameters(cu.load_model("olmo-tiny-bios"), [0], modules="mlp_down").names
        ['model.layers.0.mlp.down_proj.weight']
    """
    if modules not in MODULES:
        raise ValueError(f"unknown modules {modules!r}; use one of {MODULES}")
    layers = check_layers(getattr(layers, "layers", layers), model.n_layers)
    spec = model.architecture
    path = {"mlp": spec.mlp_module, "attn": spec.attn_module, "all": spec.block_output,
            "mlp_down": lambda layer: spec.path("mlp_down_projection_path").format(layer=layer)}[modules]
    parameters = {
        f"{path(layer)}.{name}": p for layer in layers for name, p in model.module(path(layer)).named_parameters()
    }
    if not parameters:
        raise ValueError(f"the {modules} modules of layers {layers} hold no parameters, so there is nothing to train")
    # named_parameters counts a tied embedding once
    total = sum(p.numel() for p in model.model.parameters())
    return ParameterSelection(layers, modules, parameters, total)
