"""The registry's addresses are the tensors the residual stream actually adds, on a tiny random
model of every supported architecture."""

import pytest
import torch

from causal_unlearn import ArchitectureSpec, UnsupportedArchitectureError, get_architecture, load_model
from causal_unlearn.models.architectures import register_architecture
from causal_unlearn.models.hooks import record_outputs
from tiny_models import CONFIGS, tiny_model, tiny_tokenizer

PROMPT = "Ann Teal was born in Denver on May 3"


def residual_terms(lm, spec):
    addresses = [spec.embedding, spec.final_norm] + ([spec.position_embedding] if spec.position_embedding else [])
    for layer in range(lm.n_layers):
        addresses += [spec.block_output(layer), spec.attn_contribution(layer), spec.mlp_contribution(layer)]
    ids = lm.to_tokens(PROMPT)
    with record_outputs(lm.model, addresses) as seen:
        logits = lm.logits(ids)
    return seen, logits


def decomposition_errors(lm, spec):
    seen, _ = residual_terms(lm, spec)
    previous = seen[spec.embedding] + (seen[spec.position_embedding] if spec.position_embedding else 0)
    errors = []
    for layer in range(lm.n_layers):
        expected = previous + seen[spec.attn_contribution(layer)] + seen[spec.mlp_contribution(layer)]
        errors.append((expected - seen[spec.block_output(layer)]).abs().max().item())
        previous = seen[spec.block_output(layer)]
    return errors


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_residual_stream_is_the_sum_of_registered_contributions(model_type):
    lm = load_model(tiny_model(model_type), tiny_tokenizer())
    assert lm.architecture.model_types == (model_type,)
    assert max(decomposition_errors(lm, lm.architecture)) < 1e-5


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_final_norm_and_unembedding_give_the_logits(model_type):
    lm = load_model(tiny_model(model_type), tiny_tokenizer())
    spec = lm.architecture
    seen, logits = residual_terms(lm, spec)
    last = seen[spec.block_output(lm.n_layers - 1)]
    recomputed = lm.module(spec.unembedding)(lm.module(spec.final_norm)(last))
    torch.testing.assert_close(recomputed, logits, atol=1e-5, rtol=1e-5)
    assert lm.module(spec.mlp_module(0)) is not None and lm.module(spec.attn_module(0)) is not None


def test_olmo2_contribution_is_the_post_norm_not_the_raw_module():
    """The check above must be able to fail: OLMo-2's raw attention/MLP outputs do not add up."""
    lm = load_model(tiny_model("olmo2"), tiny_tokenizer())
    raw = get_architecture("llama")  # same module names, raw sublayer outputs as contributions
    assert max(decomposition_errors(lm, raw)) > 1e-2


def test_unknown_architecture_lists_supported_and_how_to_register():
    with pytest.raises(UnsupportedArchitectureError, match=r"'mamba' is not supported.*gpt2.*register_architecture"):
        get_architecture("mamba")
    from transformers import MistralConfig, MistralForCausalLM

    model = MistralForCausalLM(MistralConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2))
    with pytest.raises(UnsupportedArchitectureError, match="'mistral' is not supported"):
        load_model(model, tiny_tokenizer())


def test_register_a_new_architecture():
    spec = get_architecture("llama")
    custom = ArchitectureSpec(**{**spec.__dict__, "name": "my_llama", "model_types": ("my_llama_type",)})
    register_architecture(custom)
    assert get_architecture("my_llama_type") is custom
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(custom)
