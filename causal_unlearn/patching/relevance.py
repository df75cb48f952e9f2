"""Relevance propagation rules: a backward that carries LRP relevance instead of the gradient.

Inside `relevance_rules(lm)` the forward computes the same values, and a backward returns
coefficients whose product with a state is its relevance (gradient x input under the rules of
Rezaei Jafari et al. 2025, "RelP", arXiv 2508.21258; after Ali et al. 2022 and Achtibat et al.
2024, AttnLRP):

- `norm` (LN rule): every layer / RMS norm's scale is held constant, so a norm is linear;
- `activation` (identity rule): an MLP's activation function passes `f(x) / x` times the
  incoming coefficient;
- `gate` (half rule): the product of a gated MLP (SwiGLU, GeGLU) passes half to each factor;
- `attention` (RelP's AH rule, off by default as in RelP's code): attention probabilities are
  held constant (queries and keys get no coefficient).

Attribution patching with these coefficients in place of the gradient is relevance patching.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor, nn

from causal_unlearn.models.architectures import Normalization, normalization
from causal_unlearn.models.hooks import HookPoint, edit, edit_attention, forward_hooks
from causal_unlearn.models.loader import LoadedModel

STABILIZER = 1e-6  # the identity rule's f(x) / x keeps this far from zero, on x's side (RelP's)


@dataclass(frozen=True)
class RelevanceRules:
    """Which rules `relevance_rules` applies; the default is RelP's (LN, identity, half).

    Examples:
        >>> RelevanceRules(), RelevanceRules(attention=True).attention
        (RelevanceRules(norm=True, activation=True, gate=True, attention=False), True)
    """

    norm: bool = True
    activation: bool = True
    gate: bool = True
    attention: bool = False


@contextmanager
def relevance_rules(lm: LoadedModel, rules: RelevanceRules = RelevanceRules()) -> Iterator[None]:
    """Inside, backward passes through `lm` carry relevance under `rules`; every value of the
    forward stays as it was. Enter it before hooks that read states by gradient, so a rule at a
    module's input (the half rule) runs before them.

    Examples:
        >>> import causal_unlearn as cu
        >>> lm = cu.load_model("olmo-tiny-bios")
        >>> ids = lm.to_tokens("Otto Russet lives in")
        >>> with relevance_rules(lm):
        ...     same = lm.logits(ids)
        >>> torch.allclose(same, lm.logits(ids), atol=1e-5)
        True
    """
    spec, model = lm.architecture, lm.model
    layers = range(lm.n_layers)
    with ExitStack() as stack:
        if rules.norm:
            norms = {name: rule for name, module in model.named_modules() if (rule := normalization(module))}
            stack.enter_context(forward_hooks(model, {name: _constant_scale(rule) for name, rule in norms.items()}))
        if rules.activation:
            paths = [spec.path("mlp_activation_path").format(layer=layer) for layer in layers]
            stack.enter_context(forward_hooks(model, {path: _identity_rule for path in paths}))
        if rules.gate and spec.mlp_gated:
            products = [HookPoint(spec.path("mlp_down_projection_path").format(layer=l), input=True) for l in layers]
            stack.enter_context(edit(model, {point: half_rule for point in products}))
        if rules.attention:
            stack.enter_context(edit_attention(model, [spec.attn_module(layer) for layer in layers],
                                               lambda q, k, v: (q.detach(), k.detach(), v)))
        yield


def half_rule(product: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """The same value; half of the incoming coefficient reaches each factor of the product.

    Examples:
        >>> a, b = torch.tensor(3.0, requires_grad=True), torch.tensor(4.0, requires_grad=True)
        >>> z = half_rule(a * b)
        >>> z.backward(); z.item(), a.grad.item(), b.grad.item()  # dz/da = b / 2, dz/db = a / 2
        (12.0, 2.0, 1.5)
    """
    half = product / 2
    return half + half.detach()


def _identity_rule(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
    x = args[0]
    stable = x + ((x == 0).to(x.dtype) + x.sign()) * STABILIZER
    return output.detach() + (x - x.detach()) * (output / stable).detach()


def _constant_scale(rule: Normalization):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0].float()
        centred = x - x.mean(-1, keepdim=True) if rule.centered else x
        linear = centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + rule.eps).detach()
        if rule.weight is not None:
            linear = linear * rule.weight.float()
        return output.detach() + (linear - linear.detach()).to(output.dtype)

    return hook
