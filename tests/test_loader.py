import copy
import dataclasses

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from causal_unlearn import LoadedModel, load_model
from causal_unlearn.models.loader import BUILTIN_MODELS, BridgeTokenizerWarning
from causal_unlearn.models.hooks import record
from tiny_models import save_tiny_model, tiny_model, tiny_tokenizer, tiny_tokenizer_without_bos


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_builtin_model(builtin):
    assert isinstance(builtin, LoadedModel)
    assert builtin.architecture.name == "olmo" and builtin.n_layers >= 8
    assert type(builtin.model).__name__ == "OlmoForCausalLM"
    assert isinstance(builtin.tokenizer, PreTrainedTokenizerFast)
    assert builtin.device.type == "cpu" and not builtin.model.training


def test_local_folder_equals_in_memory_model(tmp_path):
    folder = save_tiny_model("llama", tmp_path / "llama")
    from_folder = load_model(folder, device="cpu")
    in_memory = load_model(tiny_model("llama"), tiny_tokenizer())
    ids = in_memory.to_tokens("Ann Teal was born")
    torch.testing.assert_close(from_folder.logits(ids), in_memory.logits(ids))
    assert from_folder.tokenizer("Ann")["input_ids"] == in_memory.tokenizer("Ann")["input_ids"]


def test_dtype_and_device_are_respected(tmp_path):
    folder = save_tiny_model("olmo", tmp_path / "olmo")
    assert load_model(folder, dtype="bfloat16").dtype == torch.bfloat16
    assert load_model(str(folder), dtype=torch.float32, device="cpu").dtype == torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'float33'"):
        load_model(folder, dtype="float33")


def test_in_memory_model_is_left_alone():
    model = tiny_model("gpt2")
    before = weights(model)
    lm = load_model(model, tiny_tokenizer())
    assert lm.model is model and lm.dtype == torch.float32
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_transformer_bridge_runs_through_the_same_addresses(tmp_path):
    from transformer_lens.model_bridge import TransformerBridge

    folder = save_tiny_model("olmo2", tmp_path / "olmo2")
    plain = load_model(folder, device="cpu")
    reference = copy.deepcopy(plain.model)  # the bridge rewrites the HF modules in place
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=plain.model,
                                                 tokenizer=AutoTokenizer.from_pretrained(folder), device="cpu")
    lm = load_model(bridge)
    assert lm.bridge is bridge and lm.model is bridge.original_model
    spec = lm.architecture
    addresses = [spec.embedding] + [spec.mlp_contribution(l) for l in range(lm.n_layers)]
    ids = lm.to_tokens("Ann Teal was born")
    with record(lm.model, addresses) as ours, record(reference, addresses) as theirs:
        torch.testing.assert_close(lm.logits(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)
        reference(ids)
    for address in addresses:
        torch.testing.assert_close(ours[address], theirs[address], atol=1e-5, rtol=1e-5)


def test_nnsight_accepts_the_model_and_its_tokenizer(builtin):
    import nnsight

    model = copy.deepcopy(builtin.model)  # nnsight patches the modules it wraps
    wrapped = nnsight.TransformersModel(model, tokenizer=builtin.tokenizer)
    ids = builtin.to_tokens("Ann Teal lives in")
    with wrapped.trace("Ann Teal lives in"):
        mlp = wrapped.model.layers[2].mlp.output.save()
    with record(model, [builtin.architecture.mlp_contribution(2)]) as seen:
        model(ids)
    torch.testing.assert_close(mlp, seen[builtin.architecture.mlp_contribution(2)])


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs its tokenizer"):
        load_model(tiny_model("gpt2"))
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    with pytest.raises(TypeError, match="cannot load a int"):
        load_model(3)
    folder = tmp_path / "no_tokenizer"
    tiny_model("olmo").save_pretrained(folder)
    with pytest.raises(OSError, match="could not load a tokenizer"):
        load_model(folder)


def test_unreachable_hub_id_says_how_to_get_the_files(monkeypatch):
    import huggingface_hub.constants

    # offline as on a machine without hub access, without waiting on network time-outs
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OSError, match=r"could not load 'nobody/no-such-model'.*hf download nobody/no-such-model"):
        load_model("nobody/no-such-model")


def test_builtin_model_and_tokenizer_boot_in_transformer_lens(builtin):
    from transformer_lens.model_bridge import TransformerBridge

    folder = str(BUILTIN_MODELS["olmo-tiny-bios"])
    bridge = TransformerBridge.boot_transformers(folder, hf_model=copy.deepcopy(builtin.model),
                                                 tokenizer=builtin.tokenizer, device="cpu")
    prompt = "What is the capital of France?"
    assert torch.equal(bridge.to_tokens(prompt).cpu(), builtin.to_tokens(prompt).cpu())  # one BOS, not two
    torch.testing.assert_close(bridge(builtin.to_tokens(prompt)), builtin.logits(builtin.to_tokens(prompt)),
                               atol=1e-5, rtol=1e-5)


def test_bf16_loads_as_from_pretrained_does_keeping_computed_buffers_in_fp32(world):
    """The official scorer loads with from_pretrained(..., dtype=bfloat16), which leaves OLMo's
    rotary inv_freq (computed, never saved) in fp32; a .to(bfloat16) would round it."""
    import torch
    from transformers import AutoModelForCausalLM

    from causal_unlearn import greedy_generate
    from causal_unlearn.models.loader import BUILTIN_MODELS

    official = AutoModelForCausalLM.from_pretrained(str(BUILTIN_MODELS["olmo-tiny-bios"]), dtype=torch.bfloat16).eval()
    ours = load_model("olmo-tiny-bios", device="cpu", dtype="bfloat16")
    cast_in_memory = load_model(tiny_model("olmo"), tiny_tokenizer(), dtype=torch.bfloat16)
    for model in (ours.model, cast_in_memory.model):
        buffers = dict(model.named_buffers())
        assert buffers["model.rotary_emb.inv_freq"].dtype == torch.float32
        assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.equal(b, dict(official.named_buffers())[n]) for n, b in ours.model.named_buffers())
    prompts = [row.input for row in world.forget[:6]]
    assert greedy_generate(ours, prompts, max_new_tokens=24, progress=False) == \
        greedy_generate(dataclasses.replace(ours, model=official), prompts, max_new_tokens=24, progress=False)


def test_a_bridge_that_prepends_bos_says_so_and_takes_the_models_own_tokenizer(tmp_path):
    """TransformerLens reloads a GPT-2-style tokenizer (no BOS of its own) with add_bos_token=True:
    the bridged trace has one more token than the plain model's, and load_model says so; with the
    model's own tokenizer the traces are equal."""
    from transformer_lens.model_bridge import TransformerBridge

    from causal_unlearn import trace

    folder = tmp_path / "gpt2"
    tiny_model("gpt2").save_pretrained(folder)
    tiny_tokenizer_without_bos().save_pretrained(folder)
    plain = load_model(folder, device="cpu")
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=copy.deepcopy(plain.model),
                                                 tokenizer=plain.tokenizer, device="cpu")
    with pytest.warns(BridgeTokenizerWarning, match=r"\+1 tokens; TransformerLens prepends BOS"):
        bridged = load_model(bridge)
    own = load_model(bridge, tokenizer=AutoTokenizer.from_pretrained(folder))
    prompt, subject = "Ann Teal was born in", "Ann Teal"
    reference = trace(plain, prompt, subject, samples=2, window=1, progress=False)
    assert len(trace(bridged, prompt, subject, samples=2, window=1, progress=False).tokens) == len(reference.tokens) + 1
    same = trace(own, prompt, subject, samples=2, window=1, progress=False)
    assert same.tokens == reference.tokens
    for kind in reference.kinds:
        torch.testing.assert_close(same.scores[kind], reference.scores[kind], atol=1e-5, rtol=0)
