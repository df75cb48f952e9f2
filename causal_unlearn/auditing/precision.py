"""Lower precision: does quantizing the edited model bring the forgotten facts back?

An edit smaller than the quantization step disappears with it (Zhang et al. 2024, arXiv
2410.16454). Each function returns a copy; the model passed in is left as it is."""

from __future__ import annotations

import copy
import dataclasses
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
