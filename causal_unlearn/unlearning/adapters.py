"""Low-rank adapters (LoRA, through peft) on the linear modules of the selected layers: a third
kind of edit beside whole layers and `Components`. Only the adapters train; the run's result
holds them merged into the base weights, so `revert` / `apply` / `save_pretrained` work as for
any run, and the adapters themselves (`UnlearnResult.adapter`) stay available."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from causal_unlearn.models import weights
from causal_unlearn.models.weights import editing
from causal_unlearn.models.loader import LoadedModel
from causal_unlearn.unlearning.parameters import ParameterSelection, _width
from causal_unlearn.validation import finite, integer

ADAPTER_NAME = "default"  # peft's name for a model's only adapter
ADAPTER_FOLDER = "adapter"  # where save_pretrained puts the adapter, beside the merged model


@dataclass(frozen=True)
class LoRA:
    """Low-rank adapters instead of training the weights themselves: each linear module of the
    `modules` of `layers` (or only those whose name is in `target`, e.g. `("q_proj", "v_proj")`)
    gets A (rank x in) and B (out x rank, zero at the start), and its weight becomes
    W + B @ A * alpha / rank (peft's LoRA). Pass it as `unlearn(..., adapter=LoRA(...))`.

    Examples:
        >>> LoRA(rank=4, alpha=8).scaling
        2.0
        >>> LoRA(rank=0)
        Traceback (most recent call last):
        ...
        ValueError: LoRA rank must be an integer >= 1, got 0
    """

    rank: int = 8
    alpha: float = 16.0
    target: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (frozen)
        set_("rank", integer("LoRA rank", self.rank, minimum=1))
        set_("alpha", finite("LoRA alpha", self.alpha, above=0))
        if self.target is None:
            return
        if isinstance(self.target, str):
            hint = (f"; to adapt the {self.target} modules pass modules={self.target!r} to unlearn"
                    if self.target in ("mlp", "attn", "all") else f", e.g. target=({self.target!r},)")
            raise TypeError(f"LoRA target is a tuple of linear module names (e.g. ('q_proj', 'v_proj')), not the "
                            f"string {self.target!r}{hint}")
        target = tuple(self.target)
        if not target or not all(isinstance(name, str) and name for name in target):
            raise ValueError(f"LoRA target must name one or more linear modules (e.g. ('q_proj', 'v_proj')) or be "
                             f"None for every linear module of the chosen modules, got {self.target!r}")
        set_("target", tuple(dict.fromkeys(target)))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


def lora_targets(model: LoadedModel, selection: ParameterSelection, lora: LoRA) -> list[str]:
    """The paths of the linear modules that get adapters: those whose weight `selection` holds,
    narrowed to `lora.target`; an error naming what is wrong (a target that is not there, a
    rank as large as a module).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> lora_targets(lm, cu.select_parameters(lm, [7], modules="attn"), LoRA(target=("q_proj", "v_proj")))
        ['model.layers.7.self_attn.q_proj', 'model.layers.7.self_attn.v_proj']
    """
    if model.is_sharded:
        raise ValueError("LoRA adapters replace modules of the model, which a sharded model (shard_model) has wrapped; "
                         "train it unsharded, or edit whole layers")
    linear = [name.removesuffix(".weight") for name in selection.parameters if name.endswith(".weight")]
    linear = [path for path in linear if _width(model.module(path), output=True) is not None]
    if not linear:
        raise ValueError(f"the {selection.modules} modules of layers {selection.layers} have no linear module to "
                         "put an adapter on")
    if lora.target is not None:
        names = sorted({path.rsplit(".", 1)[-1] for path in linear})
        unknown = [name for name in lora.target if name not in names]
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {unknown}: the linear modules of the {selection.modules} "
                             f"modules of layers {selection.layers} are {names}; name some of those (or change modules=)")
        linear = [path for path in linear if path.rsplit(".", 1)[-1] in lora.target]
    for path in linear:
        module = model.module(path)
        smallest = min(_width(module, output=True), _width(module, output=False))
        if lora.rank >= smallest:
            raise ValueError(f"LoRA rank {lora.rank} is not below the smallest side ({smallest}) of {path}: that is "
                             "no low-rank edit; lower the rank, or train the layers themselves (no adapter)")
    return linear


class Adapters:
    """The adapters of one run, in the model: `selection` holds their A and B (what trains),
    `base` the weights they adapt, and `original` those weights as they were."""

    def __init__(self, model: LoadedModel, layers: dict[str, nn.Module], selection: ParameterSelection,
                 base: ParameterSelection, original: dict[str, Tensor]):
        self.model, self.layers, self.selection, self.base, self.original = model, layers, selection, base, original

    @torch.no_grad()
    def merged(self, trained: dict[str, Tensor]) -> dict[str, Tensor]:
        """The base weights with `trained` adapters (a snapshot of `selection`) merged in:
        W + B @ A * scaling, in W's dtype (peft's `get_delta_weight`, which knows GPT-2's
        transposed Conv1D)."""
        weights.load(self.selection.parameters, trained)
        return {f"{path}.weight": self.original[f"{path}.weight"]
                + layer.get_delta_weight(ADAPTER_NAME).to(self.original[f"{path}.weight"].dtype)
                for path, layer in self.layers.items()}

    def state_dict(self, trained: dict[str, Tensor]) -> dict[str, Tensor]:
        """`trained` named as peft names a model's adapter (`...up_proj.lora_A.weight`)."""
        return {name.replace(f".{ADAPTER_NAME}.", "."): tensor.clone() for name, tensor in trained.items()}


@contextmanager
def adapted(model: LoadedModel, selection: ParameterSelection, lora: LoRA) -> Iterator[Adapters]:
    """The model with adapters on `lora_targets(...)` within the block; on leaving, by any way out,
    every module, requires-grad flag and attribute is as before, and the base weights bit for bit.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> with adapted(lm, cu.select_parameters(lm, [0]), LoRA(rank=2, target=("up_proj",))) as adapters:
        ...     adapters.selection.names
        ['model.layers.0.mlp.up_proj.lora_A.default.weight', 'model.layers.0.mlp.up_proj.lora_B.default.weight']
        >>> type(lm.module("model.layers.0.mlp.up_proj")).__name__
        'Linear'
    """
    from peft import inject_adapter_in_model  # seconds of imports: only when adapters are asked for

    targets = lora_targets(model, selection, lora)
    hf = model.model
    modules = {path: model.module(path) for path in targets}
    attributes = set(vars(hf))
    base = ParameterSelection(selection.layers, selection.modules,
                              {f"{path}.weight": module.weight for path, module in modules.items()}, selection.total)
    with editing(hf, base.parameters) as original:  # the base weights and every flag back, by any way out
        try:
            inject_adapter_in_model(peft_config(describe(lora, targets, model)), hf, adapter_name=ADAPTER_NAME)
            layers = {path: model.module(path) for path in targets}
            trained = {f"{path}.{name}": p for path, layer in layers.items()
                       for name, p in layer.named_parameters() if f".{ADAPTER_NAME}." in f".{name}"}
            yield Adapters(model, layers, ParameterSelection(selection.layers, f"lora:{selection.modules}", trained,
                                                             selection.total), base, original)
        finally:
            for path, module in modules.items():
                parent, _, child = path.rpartition(".")
                setattr(model.module(parent), child, module)
            for name in set(vars(hf)) - attributes:  # peft's `peft_config`
                delattr(hf, name)


def describe(lora: LoRA, targets: list[str], model: LoadedModel) -> dict[str, Any]:
    """What a run's settings record about its adapters (plain JSON, read back by `peft_config`):
    `target_modules` the adapted modules' paths, `parameters` the adapters' size (what trains).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> describe(LoRA(rank=2), ["model.layers.0.mlp.up_proj"], lm)["parameters"]
        1280
    """
    modules = [model.module(path) for path in targets]
    return dict(rank=lora.rank, alpha=lora.alpha, target=list(lora.target) if lora.target else None,
                target_modules=list(targets),
                # GPT-2's Conv1D stores its weight transposed (in x out)
                fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in modules),
                parameters=sum(lora.rank * (_width(m, output=False) + _width(m, output=True)) for m in modules),
                base_model_name_or_path=getattr(model.model, "name_or_path", None) or None)


def peft_config(described: dict[str, Any]):
    """peft's `LoraConfig` for the adapters `describe` describes.

    Examples:
        >>> settings = {"rank": 2, "alpha": 4.0, "target_modules": ["fc"], "fan_in_fan_out": False}
        >>> peft_config(settings).r
        2
    """
    from peft import LoraConfig

    return LoraConfig(r=described["rank"], lora_alpha=described["alpha"], lora_dropout=0.0,
                      target_modules=list(described["target_modules"]), fan_in_fan_out=described["fan_in_fan_out"],
                      bias="none", base_model_name_or_path=described.get("base_model_name_or_path"))


def save_adapter(folder: Path, adapter: dict[str, Tensor], described: dict[str, Any]) -> Path:
    """Write `adapter` (an `UnlearnResult.adapter`) in peft's format, `adapter_config.json` and
    `adapter_model.safetensors`, loadable onto the *original* model with
    `peft.PeftModel.from_pretrained(model, folder)`.

    Examples:
        >>> import tempfile
        >>> described = {"rank": 1, "alpha": 2.0, "target_modules": ["fc"], "fan_in_fan_out": False}
        >>> path = save_adapter(Path(tempfile.mkdtemp()), {"fc.lora_A.weight": torch.zeros(1, 2)}, described)
        >>> sorted(p.name for p in path.iterdir())
        ['adapter_config.json', 'adapter_model.safetensors']
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    peft_config(described).save_pretrained(str(folder))
    # a PeftModel's keys start with its own path to the base model
    save_file({f"base_model.model.{name}": t.detach().cpu().contiguous() for name, t in adapter.items()},
              str(folder / "adapter_model.safetensors"))
    return folder
