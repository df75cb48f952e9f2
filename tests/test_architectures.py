"""The registry's addresses are the tensors the residual stream actually adds, on a tiny random
model of every supported architecture."""

import pytest
import torch

from causal_unlearn import ArchitectureSpec, UnsupportedArchitectureError, get_architecture, load_model
from causal_unlearn.models.architectures import _REGISTRY, _spec, register_architecture
from causal_unlearn.models.residual import ArchitectureMismatchError
from causal_unlearn.models.hooks import record
from tiny_models import CONFIGS, tiny_model, tiny_tokenizer

PROMPT = "Ann Teal was born in Denver on May 3"


def residual_terms(lm, spec):
    addresses = [spec.embedding, spec.final_norm] + ([spec.position_embedding] if spec.position_embedding else [])
    for layer in range(lm.n_layers):
        addresses += [spec.block_output(layer), spec.attn_contribution(layer), spec.mlp_contribution(layer)]
    ids = lm.to_tokens(PROMPT)
    with record(lm.model, addresses) as seen:
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
    cap = getattr(lm.model.config, "final_logit_softcapping", None)  # Gemma-2 soft-caps its logits
    if cap:
        recomputed = cap * torch.tanh(recomputed / cap)
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
    with pytest.raises(UnsupportedArchitectureError, match="'opt' is not supported"):
        load_model(_foreign("opt"), tiny_tokenizer())


def test_register_a_new_architecture():
    spec = get_architecture("llama")
    custom = ArchitectureSpec(**{**spec.__dict__, "name": "my_llama", "model_types": ("my_llama_type",)})
    register_architecture(custom)
    assert get_architecture("my_llama_type") is custom
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(custom)


def _foreign(model_type):
    """A tiny model of an architecture outside the registry."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    extra = dict(bloom=dict(n_layer=3, n_head=4), opt=dict(ffn_dim=64, word_embed_proj_dim=32))[model_type]
    config = AutoConfig.for_model(model_type, vocab_size=300, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=4, **extra)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture
def registry():
    """Registrations made by a test are undone after it."""
    saved = dict(_REGISTRY)
    yield register_architecture
    _REGISTRY.clear()
    _REGISTRY.update(saved)


def test_a_registration_that_breaks_the_residual_identity_is_refused_with_the_fix(registry):
    """Gemma-3 described with Llama's layout: the raw sublayer outputs are not what the stream adds."""
    registry(ArchitectureSpec(**{**get_architecture("llama").__dict__, "model_types": ("gemma2",)}), overwrite=True)
    with pytest.raises(ArchitectureMismatchError,
                       match=r"'llama' does not describe this gemma2 model's residual stream: .* is \d+\.\d% of "
                             r"block_output at layer 0 .*attn_contribution='post_attention_layernorm' and "
                             r"mlp_contribution='post_feedforward_layernorm'"):
        load_model(tiny_model("gemma2"), tiny_tokenizer())


def test_architectures_that_cannot_be_traced_are_refused_clearly(registry):
    """BLOOM normalises its embeddings inside the model (no module maps ids to block 0's input) and
    OPT runs its MLP on flattened positions: registered as best one can, each is refused on load."""
    registry(_spec("opt", embedding="model.decoder.embed_tokens", position_embedding="model.decoder.embed_positions",
                   blocks="model.decoder.layers", mlp="fc2", final_norm="model.decoder.final_layer_norm"))
    with pytest.raises(ArchitectureMismatchError, match=r"'model.decoder.layers.0.fc2', whose output has shape \[\d+, 32\]"):
        load_model(_foreign("opt"), tiny_tokenizer())
    registry(_spec("bloom", embedding="transformer.word_embeddings", blocks="transformer.h", attn="self_attention",
                   attn_out="self_attention.dense", mlp_out="mlp.dense_4h_to_h", final_norm="transformer.ln_f"))
    with pytest.raises(ArchitectureMismatchError, match="Only layer 0 is off: check the embedding"):
        load_model(_foreign("bloom"), tiny_tokenizer())
    registry(_spec("gemma2", mlp="feed_forward"), overwrite=True)
    with pytest.raises(ArchitectureMismatchError, match=r"mlp_contribution_path='model.layers.2.feed_forward', which "
                                                        r"this gemma2 model does not have .*'mlp'"):
        load_model(tiny_model("gemma2"), tiny_tokenizer())


def test_the_check_runs_without_dropout_and_leaves_the_training_flag():
    """Falcon drops out the sum of its sublayers outside them: in train mode the identity holds
    only because the check runs the probe in eval mode."""
    from transformers import AutoModelForCausalLM, FalconConfig

    from causal_unlearn.models import check_residual_stream

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(FalconConfig(vocab_size=300, hidden_size=32, num_hidden_layers=3,
                                                          num_attention_heads=4, hidden_dropout=0.5)).train()
    check_residual_stream(model, get_architecture("falcon"))
    assert model.training
