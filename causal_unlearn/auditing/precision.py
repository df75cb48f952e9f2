"""Lower precision: does quantizing the edited model bring the forgotten facts back?

An edit smaller than the quantization step disappears with it (Zhang et al. 2024, arXiv
2410.16454: 21 % of the forgotten knowledge at full precision, 83 % after 4-bit quantization).
Each function returns a copy; the model passed in is left as it is."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
import warnings

import torch
from torch import nn

from causal_unlearn.models.loader import LoadedModel


def int8_dynamic(model: LoadedModel) -> LoadedModel:
    """A CPU copy with every `nn.Linear` dynamically quantized to int8 (torch's own
    `quantize_dynamic`: int8 weights, activations quantized on the fly).

    Examples:
        >>> import causal_unlearn as cu
        >>> quantized = int8_dynamic(cu.load_model("olmo-tiny-bios"))
        >>> type(quantized.model.lm_head).__module__, quantized.device.type
        ('torch.ao.nn.quantized.dynamic.modules.linear', 'cpu')
    """
    from torch.ao.quantization import quantize_dynamic

    float_copy = copy.deepcopy(model.model).to(device="cpu", dtype=torch.float32).eval()
    with warnings.catch_warnings():
        # torch marks its quantized tensor types deprecated (pytorch#184982) but they still work
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*deprecated", category=DeprecationWarning)
        quantized = quantize_dynamic(float_copy, {nn.Linear}, dtype=torch.qint8)
    return dataclasses.replace(model, model=quantized, bridge=None)


def round_trip(model: LoadedModel, dtype: torch.dtype = torch.bfloat16) -> LoadedModel:
    """A copy whose every weight was cast to `dtype` and back: the edit as a model saved or served
    at lower precision keeps it.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios", dtype="float32")
        >>> copy16 = round_trip(lm)
        >>> copy16.dtype, bool((copy16.model.lm_head.weight != lm.model.lm_head.weight).any())
        (torch.float32, True)
    """
    if not dtype.is_floating_point:
        raise ValueError(f"round_trip casts to a floating dtype (bfloat16, float16); got {dtype}")
    cast = copy.deepcopy(model.model)
    with torch.no_grad():
        for p in cast.parameters():
            p.copy_(p.to(dtype).to(p.dtype))
    return dataclasses.replace(model, model=cast, bridge=None)


# bitsandbytes' block sizes (its `quantize_4bit` accepts no others)
NF4_GROUP_SIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
NF4_MISSING = ("4-bit NF4 quantization needs bitsandbytes, which is not installed: "
               "pip install 'causal_unlearn[bitsandbytes]' (or pip install bitsandbytes)")


def nf4_missing() -> str | None:
    """Why `nf4_weights` cannot run here (bitsandbytes is not installed), or None.

    Examples:
        >>> nf4_missing() is None or "pip install" in nf4_missing()
        True
    """
    return None if importlib.util.find_spec("bitsandbytes") is not None else NF4_MISSING


def nf4_weights(model: LoadedModel, group_size: int = 64) -> LoadedModel:
    """A copy whose every `nn.Linear` except the output embedding holds 4-bit NF4 weights, one
    absmax scale per group of `group_size` consecutive weights: bitsandbytes' `Linear4bit`, the
    4-bit format of `from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True,
    bnb_4bit_quant_type="nf4"))` and QLoRA (block 64, no double quantization). It stays on the
    model's device and computes in the model's dtype (on a CPU with AVX512-BF16, bitsandbytes
    computes 4-bit layers in bf16). The output embedding stays as it is, as `load_in_4bit` leaves
    it (here it is tied to the input embedding). Needs bitsandbytes
    (`pip install 'causal_unlearn[bitsandbytes]'`).

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> quantized = nf4_weights(lm)
        >>> mlp = quantized.model.model.layers[0].mlp.down_proj
        >>> type(mlp).__name__, mlp.weight.quant_type, mlp.weight.blocksize, type(quantized.model.lm_head).__name__
        ('Linear4bit', 'nf4', 64, 'Linear')
    """
    if group_size not in NF4_GROUP_SIZES:
        raise ValueError(f"group_size must be one of bitsandbytes' block sizes {NF4_GROUP_SIZES}, got {group_size!r}")
    if model.is_remote_only:
        raise ValueError(f"{model.name}'s weights are not here (a remote nnsight model); nf4_weights quantizes "
                         "local weights: load the model with its weights")
    bnb = _bitsandbytes()
    quantized = model.copy()
    keep = quantized.model.get_output_embeddings()
    linears = [(name, module) for name, module in quantized.model.named_modules()
               if isinstance(module, nn.Linear) and module is not keep]
    for name, linear in linears:
        four_bit = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                     compute_dtype=linear.weight.dtype, compress_statistics=False, quant_type="nf4",
                                     device="meta")
        four_bit.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, blocksize=group_size,
                                            compress_statistics=False, quant_type="nf4", module=four_bit)
        if linear.bias is not None:
            four_bit.bias = linear.bias
        # bitsandbytes quantizes when the weight moves to a real device
        quantized.model.set_submodule(name, four_bit.to(linear.weight.device))
    quantized.model.eval()
    return quantized


def _bitsandbytes():
    """bitsandbytes, imported without its note that a faster CPU kernel could be fetched from the hub."""
    if reason := nf4_missing():
        raise ImportError(reason)
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    level = cpu_ops.level
    cpu_ops.setLevel(logging.ERROR)
    try:
        import bitsandbytes
    finally:
        cpu_ops.setLevel(level)
    return bitsandbytes
