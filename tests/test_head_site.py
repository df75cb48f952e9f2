"""The attention-head site against TransformerLens's per-head activation patching: patching head
h's output (its `hook_z`, the head's d_head columns of the input of the attention's output
projection) at one token of a corrupted run with the clean run's, one cell at a time."""

import copy

import torch

import causal_unlearn as cu
from naive_trace import TOL

# A fact of the built-in world whose clean and corrupted runs leave most head cells with an effect
# (116 of 192 move the answer's probability by more than 1e-3, 30 by more than 1e-2): the answer
# is probable in the clean run (0.99) and not in the corrupted one (0.03).
SUBJECT, OTHER, ATTRIBUTE = "Ilse Amber", "Otto Russet", "birth_month"


def clean_and_corrupted(builtin):
    """The fact, and the token ids of its prompt and of the same prompt about OTHER (equal length;
    the tokenizer's BOS is part of both, and both sides of each comparison get these very ids)."""
    fact = next(f for f in cu.make_bios_world().facts_to_trace(split="forget", attribute=ATTRIBUTE)
                if f.subject == SUBJECT)
    other_prompt = fact.prompt.replace(fact.subject, OTHER, 1)
    clean, corrupted = builtin.to_tokens(fact.prompt), builtin.to_tokens(other_prompt)
    assert clean.shape == corrupted.shape and not torch.equal(clean, corrupted), (fact.prompt, other_prompt)
    answer = builtin.tokenizer.encode(fact.answer, add_special_tokens=False)
    assert len(answer) == 1, fact.answer
    return fact, other_prompt, clean.cpu(), corrupted.cpu(), answer[0]


def answer_probability(answer_id):
    def metric(logits):
        return torch.softmax(logits[0, -1].float(), dim=-1)[answer_id]

    return metric


def transformer_lens_head_patching(builtin, clean, corrupted, metric):
    """TransformerLens's `get_act_patch_attn_head_out_by_pos` on a bridge of the built-in model:
    [n_layers, pos, n_heads], cell (l, t, h) the metric with head h's z at layer l and token t
    patched from the clean run into the corrupted one."""
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    from causal_unlearn.models.loader import BUILTIN_MODELS

    bridge = TransformerBridge.boot_transformers(str(BUILTIN_MODELS["olmo-tiny-bios"]),
                                                 hf_model=copy.deepcopy(builtin.model), tokenizer=builtin.tokenizer,
                                                 device="cpu")
    _, clean_cache = bridge.run_with_cache(clean)
    heads = patching.get_act_patch_attn_head_out_by_pos(bridge, corrupted, clean_cache, metric)
    cfg = bridge.cfg
    assert heads.shape == (cfg.n_layers, clean.shape[-1], cfg.n_heads)  # (layer, pos, head)
    return heads.float(), metric(bridge(corrupted)).item()


def test_head_site_equals_transformer_lens_per_head_patching(tmp_path, builtin):
    fact, other_prompt, clean, corrupted, answer_id = clean_and_corrupted(builtin)
    theirs, _ = transformer_lens_head_patching(builtin, clean, corrupted, answer_probability(answer_id))

    ours = cu.trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("head",),
                    noise=cu.TokenReplacement(other_prompt), window=1, progress=False)
    assert ours.settings.samples == 1 and ours.answer_id == answer_id
    # ours: (tokens, layers, heads); TransformerLens: (layer, pos, head)
    assert ours.scores["head"].shape == (clean.shape[-1], theirs.shape[0], theirs.shape[2])
    torch.testing.assert_close(ours.scores["head"].float(), theirs.permute(1, 0, 2), atol=TOL, rtol=0)


def test_o_proj_input_columns_are_transformer_lens_heads(builtin):
    """What TransformerLens patches as head h's `hook_z` is columns [h * d_head, (h + 1) * d_head)
    of the input of `model.layers.{l}.self_attn.o_proj` in the plain Hugging Face model: patching
    those columns at one token by hand gives TransformerLens's number, for every cell."""
    fact, _, clean, corrupted, answer_id = clean_and_corrupted(builtin)
    metric = answer_probability(answer_id)
    theirs, corrupted_value = transformer_lens_head_patching(builtin, clean, corrupted, metric)

    model, config = builtin.model, builtin.model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    d_head = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    o_projs = [model.get_submodule(f"model.layers.{layer}.self_attn.o_proj") for layer in range(n_layers)]
    assert all(o.in_features == n_heads * d_head for o in o_projs)
    device = next(model.parameters()).device

    def run(tokens, pre_hooks=()):
        handles = [o_projs[layer].register_forward_pre_hook(hook) for layer, hook in pre_hooks]
        try:
            with torch.no_grad():
                return model(input_ids=tokens.to(device)).logits.cpu()
        finally:
            for handle in handles:
                handle.remove()

    clean_inputs = {}

    def recorder(layer):
        def hook(module, args):
            clean_inputs[layer] = args[0].detach().clone()

        return layer, hook

    run(clean, [recorder(layer) for layer in range(n_layers)])

    def patcher(layer, token, head):
        columns = slice(head * d_head, (head + 1) * d_head)

        def hook(module, args):
            patched = args[0].clone()
            patched[:, token, columns] = clean_inputs[layer][:, token, columns]
            return (patched, *args[1:])

        return layer, hook

    ours = torch.tensor([[[metric(run(corrupted, [patcher(layer, token, head)])).item() for head in range(n_heads)]
                          for token in range(clean.shape[-1])] for layer in range(n_layers)])
    assert abs(metric(run(corrupted)).item() - corrupted_value) < TOL  # the two models agree unpatched
    # the comparison means something: most cells move the answer's probability
    assert ((theirs - corrupted_value).abs() > 1e-3).sum() > theirs.numel() // 2
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)
