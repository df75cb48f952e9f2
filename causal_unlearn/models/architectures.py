"""Where each supported architecture keeps the states that tracing and unlearning touch.

All architecture-specific knowledge of the library lives here. Addresses are paths in the
Hugging Face model's own module tree (as in nnsight), with `{layer}` standing for the block index.
The residual stream of every supported architecture obeys

    block_output[l] = block_output[l - 1] + attn_contribution[l] + mlp_contribution[l]

with block_output[-1] = embedding output (+ learned position embedding where there is one),
and the registry names the modules whose outputs are exactly those terms. A module whose output
is a tuple contributes its first element.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn
from transformers import PretrainedConfig


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module paths of one architecture family.

    Examples:
        >>> spec = get_architecture("llama")
        >>> spec.mlp_contribution(3)
        'model.layers.3.mlp'
    """

    name: str
    model_types: tuple[str, ...]
    embedding: str
    block: str
    attn_contribution_path: str
    mlp_contribution_path: str
    attn_module_path: str
    mlp_module_path: str
    final_norm: str
    unembedding: str
    position_embedding: str | None = None
    attn_output_projection_path: str | None = None  # its input: the heads' outputs, concatenated
    mlp_down_projection_path: str | None = None  # its input: the MLP's hidden units
    mlp_activation_path: str | None = None  # the MLP's activation function module
    mlp_gated: bool = False  # the activation's output is multiplied by another projection (SwiGLU, GeGLU)

    def block_output(self, layer: int) -> str:
        return self.block.format(layer=layer)

    def attn_contribution(self, layer: int) -> str:
        """The module whose output the residual stream adds for attention at `layer`."""
        return self.attn_contribution_path.format(layer=layer)

    def mlp_contribution(self, layer: int) -> str:
        """The module whose output the residual stream adds for the MLP at `layer`."""
        return self.mlp_contribution_path.format(layer=layer)

    def attn_module(self, layer: int) -> str:
        """The attention module itself (its parameters are what unlearning trains)."""
        return self.attn_module_path.format(layer=layer)

    def mlp_module(self, layer: int) -> str:
        """The MLP module itself (its parameters are what unlearning trains)."""
        return self.mlp_module_path.format(layer=layer)

    def path(self, name: str) -> str:
        """The `{layer}` template of one of the spec's per-layer paths (`block`, `..._path`), with a
        clear error where a registered spec leaves it out.

        Examples:
            >>> get_architecture("gpt2").path("attn_output_projection_path")
            'transformer.h.{layer}.attn.c_proj'
        """
        template = getattr(self, name)
        if template is None:
            raise ValueError(f"the {self.name!r} architecture spec names no {name}; register it again with "
                             f"ArchitectureSpec(..., {name}='...{{layer}}...') to trace this site")
        return template


def _spec(
    name: str,
    *,
    embedding: str = "model.embed_tokens",
    blocks: str = "model.layers",
    attn: str = "self_attn",
    mlp: str = "mlp",
    attn_out: str | None = None,
    mlp_out: str | None = None,
    final_norm: str = "model.norm",
    position_embedding: str | None = None,
    attn_output_projection: str = "o_proj",
    mlp_down_projection: str = "down_proj",
    mlp_activation: str = "act_fn",
    mlp_gated: bool = True,
) -> ArchitectureSpec:
    """A spec from block-relative module names; the defaults are the Llama layout."""
    block = f"{blocks}.{{layer}}"
    return ArchitectureSpec(
        name=name,
        model_types=(name,),
        embedding=embedding,
        block=block,
        attn_contribution_path=f"{block}.{attn_out or attn}",
        mlp_contribution_path=f"{block}.{mlp_out or mlp}",
        attn_module_path=f"{block}.{attn}",
        mlp_module_path=f"{block}.{mlp}",
        final_norm=final_norm,
        unembedding="lm_head",
        position_embedding=position_embedding,
        attn_output_projection_path=f"{block}.{attn}.{attn_output_projection}",
        mlp_down_projection_path=f"{block}.{mlp}.{mlp_down_projection}",
        mlp_activation_path=f"{block}.{mlp}.{mlp_activation}",
        mlp_gated=mlp_gated,
    )


_BUILTIN = (
    _spec("gpt2", embedding="transformer.wte", position_embedding="transformer.wpe", blocks="transformer.h",
          attn="attn", final_norm="transformer.ln_f", attn_output_projection="c_proj", mlp_down_projection="c_proj",
          mlp_activation="act", mlp_gated=False),
    # Pythia uses a parallel residual (x + attn(ln1 x) + mlp(ln2 x)); the contributions are the
    # same two module outputs either way.
    _spec("gpt_neox", embedding="gpt_neox.embed_in", blocks="gpt_neox.layers", attn="attention",
          final_norm="gpt_neox.final_layer_norm", attn_output_projection="dense", mlp_down_projection="dense_4h_to_h",
          mlp_activation="act", mlp_gated=False),
    _spec("llama"),
    _spec("mistral"),
    _spec("qwen2"),
    _spec("olmo"),
    # OLMo-2 and -3 and Gemma-2 and -3 normalise each sublayer's output before the residual add:
    # the contribution is the post-norm, not the raw attention or MLP output.
    *(_spec(name, attn_out="post_attention_layernorm", mlp_out="post_feedforward_layernorm")
      for name in ("olmo2", "olmo3", "gemma2", "gemma3_text")),
    # Falcon adds its attention output into the MLP's output in place (parallel attention); the
    # contributions are still the two modules' own outputs.
    _spec("falcon", embedding="transformer.word_embeddings", blocks="transformer.h", attn="self_attention",
          final_norm="transformer.ln_f", attn_output_projection="dense", mlp_down_projection="dense_4h_to_h",
          mlp_activation="act", mlp_gated=False),
)

_REGISTRY: dict[str, ArchitectureSpec] = {t: spec for spec in _BUILTIN for t in spec.model_types}


@dataclass(frozen=True)
class Normalization:
    """How a normalization module scales its input: `weight * (x - mean(x) if centered else x)
    / sqrt(mean of the squares + eps) + bias`, `weight` as it multiplies (Gemma's 1 + w)."""

    centered: bool
    eps: float
    weight: Tensor | None


def normalization(module: nn.Module) -> Normalization | None:
    """The module's `Normalization` if it is a layer or RMS norm of a supported family, else None;
    a module named like a norm whose arithmetic is not known here is an error, since relevance
    rules must hold its scale constant.

    Examples:
        >>> normalization(nn.LayerNorm(4))
        Normalization(centered=True, eps=1e-05, weight=Parameter containing:
        tensor([1., 1., 1., 1.], requires_grad=True))
        >>> normalization(nn.Linear(2, 2)) is None
        True
    """
    name = type(module).__name__
    if isinstance(module, nn.LayerNorm):
        return Normalization(True, module.eps, module.weight)
    if name == "OlmoLayerNorm":  # no parameters, eps fixed in its forward
        return Normalization(True, 1e-5, None)
    if name.endswith("RMSNorm"):
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        weight = getattr(module, "weight", None)
        if eps is not None and weight is not None:
            return Normalization(False, float(eps), 1 + weight if name.startswith("Gemma") else weight)
    if name.endswith(("Norm", "LayerNorm")):
        raise UnsupportedArchitectureError(
            f"{name} looks like a normalization whose arithmetic this library does not know; teach "
            "causal_unlearn.models.architectures.normalization its centering, eps and weight")
    return None


class UnsupportedArchitectureError(ValueError):
    pass


def register_architecture(spec: ArchitectureSpec, *, overwrite: bool = False) -> None:
    """Teach the library a new architecture, keyed by its HF `config.model_type`s.

    Examples:
        >>> spec = ArchitectureSpec("my_mistral", ("my_mistral",), "model.embed_tokens", "model.layers.{layer}",
        ...     "model.layers.{layer}.self_attn", "model.layers.{layer}.mlp", "model.layers.{layer}.self_attn",
        ...     "model.layers.{layer}.mlp", "model.norm", "lm_head")
        >>> register_architecture(spec, overwrite=True); get_architecture("my_mistral").name
        'my_mistral'
    """
    if not isinstance(spec, ArchitectureSpec):
        raise TypeError(f"register_architecture takes an ArchitectureSpec, got a {type(spec).__name__}; build one with "
                        "causal_unlearn.ArchitectureSpec(name, model_types, embedding, block, ...)")
    for model_type in spec.model_types:
        if model_type in _REGISTRY and not overwrite:
            raise ValueError(f"architecture {model_type!r} is already registered; pass overwrite=True to replace it")
        _REGISTRY[model_type] = spec


def supported_architectures() -> list[str]:
    """The HF `model_type`s the library knows.

    Examples:
        >>> "llama" in supported_architectures() and "gpt2" in supported_architectures()
        True
    """
    return sorted(_REGISTRY)


def get_architecture(config_or_model_type: PretrainedConfig | str) -> ArchitectureSpec:
    """The spec for a HF config (or its `model_type`); a clear error for an unknown one.

    Examples:
        >>> spec = get_architecture("gpt2")
        >>> spec.mlp_module(0), spec.block_output(2)
        ('transformer.h.0.mlp', 'transformer.h.2')
    """
    model_type = getattr(config_or_model_type, "model_type", config_or_model_type)
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported. Supported model types: "
            f"{', '.join(supported_architectures())}. To add one, describe its module paths with "
            "causal_unlearn.ArchitectureSpec(...) and call causal_unlearn.register_architecture(spec)."
        ) from None
