"""Sites: where a traced state lives in every block, and how one cell of it is addressed.

A `Site` names one state per layer (a module's output or input, in the model's own module tree)
and, where a state splits into units (attention heads), which features each unit is. The
architecture spec says where each built-in site sits on every supported architecture, so the
same site works on GPT-2, Pythia, Llama, OLMo, ... unchanged:

- `hidden`: the block's output (the residual stream after layer l; TransformerLens `resid_post`);
- `resid_pre`: the block's input (TransformerLens `resid_pre`);
- `mlp`, `attn`: the MLP's / attention's contribution to the residual stream; a cell restores
  ROME's window of layers around its layer;
- `head`: each attention head's output before the output projection (TransformerLens `hook_z`):
  a cell is (token, layer, head);
- `neuron`: each of the MLP's hidden units (the down projection's input): a cell is (token, layer,
  neuron); with thousands of neurons a layer, trace it with `method="attribution"`;
- `MLPNeurons([...])`: a set of the MLP's hidden units, restored together;
- `ModuleSite("model.layers.{layer}.self_attn.o_proj", input=True)`: any module's output or input.
"""

from __future__ import annotations

from dataclasses import dataclass

from causal_unlearn.models.architectures import ArchitectureSpec
from causal_unlearn.models.hooks import HookPoint
from causal_unlearn.models.loader import LoadedModel


@dataclass(frozen=True)
class Site:
    """Base class: a state at the output (or `input`) of one module per layer. Subclasses say
    which module (`template`) and, for states split into units, how (`n_units`, `features`)."""

    name: str
    input: bool = False
    windowed: bool = False  # a cell restores ROME's window of layers around its layer

    def template(self, spec: ArchitectureSpec) -> str:
        """The module's path with `{layer}` for the block index."""
        raise NotImplementedError

    def n_units(self, lm: LoadedModel) -> int | None:
        """How many units a layer's state splits into (a cell per unit), or None: one cell per layer."""
        return None

    def features(self, lm: LoadedModel, unit: int | None) -> range | tuple[int, ...] | None:
        """The features of the state that one cell restores (None: all)."""
        return None

    def units(self, lm: LoadedModel) -> list[int | None]:
        """The units a layer's cells are: each unit's index, or [None] for one cell per layer.

        Examples:
            >>> import causal_unlearn as cu
            >>> lm = cu.load_model("olmo-tiny-bios")
            >>> HEAD.units(lm), HIDDEN.units(lm)
            ([0, 1, 2, 3], [None])
        """
        n_units = self.n_units(lm)
        return list(range(n_units)) if n_units else [None]

    def point(self, lm: LoadedModel, layer: int, unit: int | None = None) -> HookPoint:
        """Where the cell (layer, unit) lives in `lm`.

        Examples:
            >>> import causal_unlearn as cu
            >>> lm = cu.load_model("olmo-tiny-bios")
            >>> cu.patching.HEAD.point(lm, 3, unit=1)
            HookPoint('model.layers.3.self_attn.o_proj', input=True, features=range(32, 64))
        """
        return HookPoint(self.template(lm.architecture).format(layer=layer), self.input, self.features(lm, unit))

    def restored_layers(self, layer: int, window: int, n_layers: int) -> range:
        """The layers a cell at `layer` restores: ROME's window [layer - window // 2,
        layer + ceil(window / 2)) clipped to the model for a windowed site, else `layer` alone.

        Examples:
            >>> MLP.restored_layers(3, 10, 8), MLP.restored_layers(3, 1, 8), HIDDEN.restored_layers(3, 10, 8)
            (range(0, 8), range(3, 4), range(3, 4))
        """
        if not self.windowed:
            return range(layer, layer + 1)
        return range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))

    def check(self, lm: LoadedModel) -> None:
        """A clear error where the site does not exist on `lm`."""
        point = self.point(lm, 0, self.units(lm)[0])
        try:
            lm.model.get_submodule(point.module)
        except AttributeError:
            raise ValueError(f"site {self.name!r}: {lm.name} has no module {point.module!r} (from the template "
                             f"{self.template(lm.architecture)!r}); module paths are those of "
                             "lm.model.named_modules()") from None


@dataclass(frozen=True)
class ArchitectureSite(Site):
    """A built-in site: its module is one of the architecture spec's per-layer paths."""

    spec_path: str = "block"

    def template(self, spec: ArchitectureSpec) -> str:
        return spec.path(self.spec_path)


@dataclass(frozen=True)
class AttentionHeads(ArchitectureSite):
    """Each attention head's output at one token, before the output projection mixes them (the
    projection's input holds the heads' outputs side by side, also under grouped-query attention)."""

    name: str = "head"
    input: bool = True
    spec_path: str = "attn_output_projection_path"

    def n_units(self, lm: LoadedModel) -> int:
        return lm.n_heads

    def features(self, lm: LoadedModel, unit: int | None) -> range | None:
        if unit is None:
            return None
        width = _input_width(lm, self.template(lm.architecture)) // lm.n_heads
        return range(unit * width, (unit + 1) * width)


@dataclass(frozen=True)
class EachNeuron(ArchitectureSite):
    """Each of the MLP's hidden units at one token, a cell of its own (the down projection's input
    feature).

    Examples:
        >>> import causal_unlearn as cu
        >>> NEURON.n_units(cu.load_model("olmo-tiny-bios")), NEURON.features(None, 7)
        (512, (7,))
    """

    name: str = "neuron"
    input: bool = True
    spec_path: str = "mlp_down_projection_path"

    def n_units(self, lm: LoadedModel) -> int:
        return _input_width(lm, self.template(lm.architecture))

    def features(self, lm: LoadedModel, unit: int | None) -> tuple[int, ...] | None:
        return None if unit is None else (unit,)


@dataclass(frozen=True)
class MLPNeurons(ArchitectureSite):
    """A set of the MLP's hidden units (the input of its down projection), restored together.

    Examples:
        >>> MLPNeurons([3, 7]).name
        'mlp_neurons[3,7]'
    """

    neurons: tuple[int, ...] = ()
    name: str = ""
    input: bool = True
    spec_path: str = "mlp_down_projection_path"

    def __init__(self, neurons, name: str = ""):
        neurons = tuple(int(n) for n in neurons)
        if not neurons or any(n < 0 for n in neurons):
            raise ValueError(f"MLPNeurons needs one or more neuron indices >= 0, got {neurons!r}")
        object.__setattr__(self, "neurons", neurons)
        object.__setattr__(self, "name", name or f"mlp_neurons[{','.join(map(str, neurons))}]")
        object.__setattr__(self, "input", True)
        object.__setattr__(self, "windowed", False)
        object.__setattr__(self, "spec_path", "mlp_down_projection_path")

    def features(self, lm: LoadedModel, unit: int | None) -> tuple[int, ...]:
        return self.neurons

    def check(self, lm: LoadedModel) -> None:
        super().check(lm)
        width = _input_width(lm, self.template(lm.architecture))
        if max(self.neurons) >= width:
            raise ValueError(f"site {self.name!r}: neuron {max(self.neurons)} is out of range; {lm.name}'s MLP has "
                             f"{width} hidden units")


@dataclass(frozen=True)
class ModuleSite(Site):
    """Any module's output (or `input`) per layer, by path template.

    Examples:
        >>> ModuleSite("model.layers.{layer}.self_attn.o_proj", input=True).name
        'model.layers.{layer}.self_attn.o_proj:input'
    """

    path: str = ""

    def __init__(self, path: str, *, input: bool = False, name: str = ""):
        if not isinstance(path, str) or "{layer}" not in path:
            raise ValueError(f"a module site's path is a template with {{layer}} for the block index, e.g. "
                             f"'model.layers.{{layer}}.mlp.down_proj'; got {path!r:.80}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "input", bool(input))
        object.__setattr__(self, "windowed", False)
        object.__setattr__(self, "name", name or (f"{path}:input" if input else path))

    def template(self, spec: ArchitectureSpec) -> str:
        return self.path


def _input_width(lm: LoadedModel, template: str) -> int:
    """The width of a linear module's input (nn.Linear's in_features, GPT-2 Conv1D's weight rows)."""
    module = lm.module(template.format(layer=0))
    width = getattr(module, "in_features", None) or getattr(module, "nx", None)
    if width is None:
        raise ValueError(f"cannot tell the input width of {type(module).__name__} at {template!r}")
    return int(width)


HIDDEN = ArchitectureSite("hidden", spec_path="block")
RESID_PRE = ArchitectureSite("resid_pre", input=True, spec_path="block")
MLP = ArchitectureSite("mlp", windowed=True, spec_path="mlp_contribution_path")
ATTN = ArchitectureSite("attn", windowed=True, spec_path="attn_contribution_path")
HEAD = AttentionHeads()
NEURON = EachNeuron()

SITES: dict[str, Site] = {site.name: site for site in (HIDDEN, MLP, ATTN, HEAD, NEURON, RESID_PRE)}
KINDS = ("hidden", "mlp", "attn")  # ROME's three, the default


def resolve_site(site: str | Site) -> Site:
    """A site from its shorthand name, or as given.

    Examples:
        >>> resolve_site("head") is HEAD
        True
    """
    if isinstance(site, Site):
        return site
    if isinstance(site, str) and site in SITES:
        return SITES[site]
    if isinstance(site, str) and site.startswith("mlp_neurons"):
        raise ValueError("the MLP-neurons site needs the neurons: pass MLPNeurons([3, 17]) instead of a string")
    raise ValueError(f"unknown site {site!r}; use one of {tuple(SITES)}, MLPNeurons([...]) or "
                     "ModuleSite('...{layer}...', input=...)")
