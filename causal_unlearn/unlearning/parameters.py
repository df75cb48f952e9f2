"""Which weights unlearning may change: the MLP and/or attention of chosen layers, or only some of
their heads and neurons (`Components`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal

import torch
from jaxtyping import Bool
from torch import Tensor, nn

from causal_unlearn.localization.components import Components
from causal_unlearn.models import weights
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.patching.sites import HEAD, NEURON
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
    # a finer edit: where a parameter has a mask, only its True entries may change
    masks: dict[str, Bool[Tensor, "..."]] = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.parameters)

    @property
    def count(self) -> int:
        return sum(int(self.masks[n].sum()) if n in self.masks else p.numel() for n, p in self.parameters.items())

    @property
    def share(self) -> float:
        return self.count / self.total

    def __repr__(self) -> str:
        return (f"ParameterSelection(layers={self.layers}, modules={self.modules!r}, tensors={len(self.parameters)}, "
                f"count={self.count:,}, share={self.share:.2%})")

    def snapshot(self) -> dict[str, Tensor]:
        """Detached copies of the selected weights, to restore bit for bit later."""
        return weights.snapshot(self.parameters)

    def load(self, saved: dict[str, Tensor]) -> None:
        """Copy `saved` weights (from `snapshot`) back into the selected parameters."""
        weights.load(self.parameters, saved)

    def mask_gradients(self) -> None:
        """Zero the gradient outside the masks (before clipping: the norm is the components')."""
        for name, mask in self.masks.items():
            grad = self.parameters[name].grad
            if grad is not None:
                grad.mul_(mask)

    @torch.no_grad()
    def confine(self, original: dict[str, Tensor]) -> None:
        """Put `original` back outside the masks, bit for bit (AdamW's decay and its moments move
        every entry of a parameter, not only those with a gradient)."""
        for name, mask in self.masks.items():
            p = self.parameters[name]
            p.copy_(torch.where(mask, p, original[name]))


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
    if isinstance(layers, Components):
        return select_components(model, layers)
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


def select_components(model: LoadedModel, components: Components) -> ParameterSelection:
    """The weights of `components`' heads and neurons, each parameter with a mask of its entries
    that may change: a head's columns of the attention's output projection; a neuron's rows of
    every projection into the MLP's hidden units (and their biases) and its column of the down
    projection.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> selection = select_components(lm, cu.Components(heads={3: (0,)}, neurons={1: (7, 9)}))
        >>> selection.count, selection.names
        (4864, ['model.layers.1.mlp.down_proj.weight', 'model.layers.1.mlp.gate_proj.weight', 'model.layers.1.mlp.up_proj.weight', 'model.layers.3.self_attn.o_proj.weight'])
    """
    if model.is_sharded:
        raise ValueError("a finer edit (Components) masks whole weights, which a sharded model splits over processes; "
                         "train it unsharded, or edit whole layers")
    layers = check_layers(components.layers, model.n_layers)
    masks: dict[str, Tensor] = {}
    parameters: dict[str, nn.Parameter] = {}

    def allow(path: str, module: nn.Module, features, *, as_input: bool) -> None:
        for name, p in module.named_parameters(recurse=False):
            full = f"{path}.{name}"
            mask = masks.setdefault(full, torch.zeros_like(p, dtype=torch.bool))
            parameters[full] = p
            axis = _feature_axis(module, p, as_input)
            if axis is not None:
                mask.index_fill_(axis, torch.tensor(features, device=p.device), True)

    for layer, heads in components.heads.items():
        path = HEAD.template(model.architecture).format(layer=layer)
        _check_units("head", heads, HEAD.n_units(model), layer)
        allow(path, model.module(path), [f for h in heads for f in HEAD.features(model, h)], as_input=True)
    for layer, neurons in components.neurons.items():
        down = NEURON.template(model.architecture).format(layer=layer)
        width = NEURON.n_units(model)
        _check_units("neuron", neurons, width, layer)
        allow(down, model.module(down), list(neurons), as_input=True)
        mlp = model.architecture.mlp_module(layer)
        for name, module in model.module(mlp).named_modules():
            path = f"{mlp}.{name}"
            if path != down and _width(module, output=True) == width:  # a projection into the hidden units
                allow(path, module, list(neurons), as_input=False)
    parameters = {name: p for name, p in sorted(parameters.items()) if masks[name].any()}  # not a head's o_proj bias
    total = sum(p.numel() for p in model.model.parameters())
    return ParameterSelection(layers, "components", parameters, total, {n: masks[n] for n in parameters})


def _width(module: nn.Module, *, output: bool) -> int | None:
    """A linear module's output (or input) width: nn.Linear's, or GPT-2 Conv1D's (weight: in x out)."""
    if isinstance(module, nn.Linear):
        return module.out_features if output else module.in_features
    if type(module).__name__ == "Conv1D":
        return module.nf if output else module.nx
    return None


def _feature_axis(module: nn.Module, p: nn.Parameter, as_input: bool) -> int | None:
    """Which axis of `p` indexes the module's input (or output) features; None for a bias that has
    no input axis (it changes with no input feature)."""
    conv1d = type(module).__name__ == "Conv1D"  # GPT-2: weight is in x out
    if p.dim() == 1:
        return None if as_input else 0
    if as_input:
        return 0 if conv1d else 1
    return 1 if conv1d else 0


def _check_units(kind: str, units: tuple[int, ...], n_units: int, layer: int) -> None:
    if max(units) >= n_units:
        raise ValueError(f"{kind} {max(units)} of layer {layer} is out of range: the model has {n_units} {kind}s a layer")
