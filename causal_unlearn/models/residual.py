"""Checking that an architecture spec describes a model: the residual identity on a probe input.

Tracing restores, and unlearning trains, the modules a spec names. A spec whose addresses are
not the terms of the residual stream (a Gemma-3 model described with Llama's layout, say) would
trace and edit the wrong states without any error, so every model is checked once when loaded.
"""

from __future__ import annotations

import itertools
import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

from causal_unlearn.models.architectures import ArchitectureSpec, UnsupportedArchitectureError
from causal_unlearn.models.hooks import record

PROBE_TOKENS = 6
# fp32 sums agree to ~1e-6; bf16/fp16 models round at every add, the check adds in fp32
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
LOW_PRECISION_TOLERANCE = 3e-2


class ArchitectureMismatchError(UnsupportedArchitectureError):
    """An architecture spec's addresses do not add up to the model's residual stream."""


def check_residual_stream(model: nn.Module, spec: ArchitectureSpec) -> None:
    """Raise `ArchitectureMismatchError` unless, on a probe input, every layer satisfies

        block_output[l] = block_output[l - 1] + attn_contribution[l] + mlp_contribution[l]

    with block_output[-1] the embedding (plus the position embedding), saying which layer is off,
    by how much, and which modules of the block would fit instead.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> check_residual_stream(lm.model, lm.architecture)  # passes silently
    """
    n_layers = model.config.num_hidden_layers
    check_addresses(model, spec)
    parameter = next(model.parameters())
    if parameter.device.type == "meta":
        raise ValueError("the model's weights are on the meta device (not loaded); load them first, e.g. with "
                         "from_pretrained(...) without device_map='meta', or accelerate's load_checkpoint_and_dispatch")
    vocabulary = getattr(model.config, "vocab_size", None) or 2
    input_ids = (torch.arange(PROBE_TOKENS, device=parameter.device) * 7 + 3) % vocabulary
    seen = _probe(model, input_ids, _registered(spec, n_layers))
    _check_shapes(seen, spec, n_layers, model.config.model_type)
    tolerance = TOLERANCE.get(parameter.dtype, LOW_PRECISION_TOLERANCE)
    errors = [_relative_error(seen, spec, layer) for layer in range(n_layers)]
    bad = [layer for layer, error in enumerate(errors) if not error <= tolerance]
    if not bad:
        return
    layer = bad[0]
    worst = max(bad, key=lambda l: math.inf if math.isnan(errors[l]) else errors[l])
    raise ArchitectureMismatchError(
        f"the architecture spec {spec.name!r} does not describe this {model.config.model_type} model's residual "
        f"stream: block_output[l] - block_output[l-1] - attn_contribution[l] - mlp_contribution[l] should be 0, but "
        f"is {errors[layer]:.1%} of block_output at layer {layer} (the worst, layer {worst}: {errors[worst]:.1%}; "
        f"tolerance {tolerance:.0e}). {_diagnosis(model, spec, input_ids, layer, tolerance)}"
    )


class ModelForwardError(ValueError):
    """The model's own forward fails, before anything of this library runs."""


def _probe(model: nn.Module, input_ids: Tensor, addresses: list[str]) -> dict[str, Tensor]:
    """The outputs at `addresses` for one forward of `input_ids`, in eval mode (no dropout)."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad(), record(model, addresses) as seen:
            model(input_ids=input_ids[None], use_cache=False)
    except (RuntimeError, ValueError, IndexError) as error:  # its own code fails: a config it cannot run
        raise ModelForwardError(
            f"this {model.config.model_type} model fails on a 6-token forward of its own "
            f"({type(error).__name__}: {str(error).splitlines()[0][:200]}); check its config (e.g. "
            "num_key_value_heads must divide num_attention_heads, hidden_size must be heads x head_dim)") from error
    finally:
        model.train(training)
    return seen


def _registered(spec: ArchitectureSpec, n_layers: int) -> list[str]:
    addresses = [spec.embedding] + ([spec.position_embedding] if spec.position_embedding else [])
    for layer in range(n_layers):
        addresses += [spec.block_output(layer), spec.attn_contribution(layer), spec.mlp_contribution(layer)]
    return addresses


def check_addresses(model: nn.Module, spec: ArchitectureSpec) -> None:
    """Raise `ArchitectureMismatchError` if a module the spec names is not in the model (the part
    of `check_residual_stream` that needs no weights, e.g. for a model that runs on NDIF)."""
    n_layers = model.config.num_hidden_layers
    paths = {"embedding": spec.embedding, "position_embedding": spec.position_embedding,
             "block": spec.block_output(n_layers - 1), "attn_contribution_path": spec.attn_contribution(n_layers - 1),
             "mlp_contribution_path": spec.mlp_contribution(n_layers - 1), "attn_module_path": spec.attn_module(0),
             "mlp_module_path": spec.mlp_module(0), "final_norm": spec.final_norm, "unembedding": spec.unembedding}
    for field, path in paths.items():
        if path is None:
            continue
        try:
            model.get_submodule(path)
        except AttributeError:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            try:
                children = [name for name, _ in model.get_submodule(parent).named_children()]
            except AttributeError:
                children = [name for name, _ in model.named_children()]
                parent = "the model"
            raise ArchitectureMismatchError(
                f"the architecture spec {spec.name!r} names {field}={path!r}, which this "
                f"{model.config.model_type} model does not have ({parent or 'the model'} holds {children}); "
                "fix the spec's module paths (print(model) shows the module tree)"
            ) from None


def _check_shapes(seen: dict[str, Tensor], spec: ArchitectureSpec, n_layers: int, model_type: str) -> None:
    expected = seen[spec.block_output(0)].shape
    for layer in range(n_layers):
        for field, path in (("attn_contribution", spec.attn_contribution(layer)),
                            ("mlp_contribution", spec.mlp_contribution(layer))):
            if seen[path].shape != expected:
                raise ArchitectureMismatchError(
                    f"the architecture spec {spec.name!r} names {field}={path!r}, whose output has shape "
                    f"{list(seen[path].shape)} where the block's is {list(expected)}: tracing restores states "
                    f"shaped [batch, position, d_model]. This {model_type} model computes that sublayer on "
                    "flattened positions and adds it inside the block, so it cannot be traced here; name a module "
                    "whose output has the block's shape, or use a supported architecture")


def _previous(seen: dict[str, Tensor], spec: ArchitectureSpec, layer: int) -> Tensor:
    if layer > 0:
        return seen[spec.block_output(layer - 1)]
    embedding = seen[spec.embedding]
    return embedding + seen[spec.position_embedding] if spec.position_embedding else embedding


def _relative_error(seen: dict[str, Tensor], spec: ArchitectureSpec, layer: int,
                    attn: Tensor | None = None, mlp: Tensor | None = None) -> float:
    attn = seen[spec.attn_contribution(layer)] if attn is None else attn
    mlp = seen[spec.mlp_contribution(layer)] if mlp is None else mlp
    output = seen[spec.block_output(layer)].double()
    residual: Float[Tensor, "1 pos d_model"] = output - _previous(seen, spec, layer).double() - attn.double() - mlp.double()
    return float(residual.norm() / output.norm().clamp(min=1e-30))


def _diagnosis(model: nn.Module, spec: ArchitectureSpec, input_ids: Tensor, layer: int, tolerance: float) -> str:
    """Which two modules of the block would make the identity hold, if any do."""
    block = spec.block_output(layer)
    inside = [f"{block}.{name}" for name, _ in model.get_submodule(block).named_modules() if name]
    seen = _probe(model, input_ids, _registered(spec, model.config.num_hidden_layers) + inside)
    shape = seen[block].shape
    candidates = [a for a in inside if isinstance(seen.get(a), Tensor) and seen[a].shape == shape]
    fits = [(a, m) for a, m in itertools.product(candidates, repeat=2)
            if a != m and _relative_error(seen, spec, layer, seen[a], seen[m]) <= tolerance]
    if fits:
        attn, mlp = (path.removeprefix(f"{block}.") for path in fits[0])
        return (f"In block {layer} the identity holds with attn_contribution={attn!r} and mlp_contribution={mlp!r}: "
                f"register the spec with attn_contribution_path='{spec.block}.{attn}' and "
                f"mlp_contribution_path='{spec.block}.{mlp}'.")
    if layer == 0 and all(_relative_error(seen, spec, l) <= tolerance
                                        for l in range(1, model.config.num_hidden_layers)):
        return ("Only layer 0 is off: check the embedding (and position_embedding) addresses; the first block "
                "must read exactly their sum.")
    return ("No two modules of the block add up to its output: its residual stream may be added inside a submodule "
            "(as in BLOOM's attention) or scaled, which the library cannot trace; such models are not supported.")
