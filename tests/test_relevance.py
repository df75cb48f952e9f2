"""Relevance patching (RelP): the rules against a float64 reference written here from the paper,
conservation where the rules promise it, and the forward left as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import causal_unlearn as cu
from causal_unlearn.patching import MLPNeurons, RelevanceRules, edit, relevance_rules
from causal_unlearn.tracing import AttributionFixes, GaussianNoise
from causal_unlearn.tracing.corruption import corrupted_embeddings, embeddings_of
from naive_trace import PLACES
from tiny_models import CONFIGS, tiny_model, tiny_tokenizer

PROMPT, SUBJECT, ANSWER = "Ann Teal was born in Denver on May", "Ann Teal", " 3"
RELP = AttributionFixes(log_odds=False, qk_fix=False, steps=0, relp=True)
NEURONS = (1, 5, 9)


# ------------------------------------------------------------------ the rules, written from the paper
class _IdentityRule(torch.autograd.Function):
    """y = f(x); the backward passes f(x) / x (x moved 1e-6 away from zero)."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(y / (x + ((x == 0).to(x.dtype) + x.sign()) * 1e-6))
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        return ctx.saved_tensors[0] * grad, None


class _HalfProduct(torch.autograd.Function):
    """z = a * b; each factor gets half of the product's gradient rule: dz/da = b / 2, dz/db = a / 2."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad * b / 2, grad * a / 2


def _norm_forward(module: nn.Module):
    """The norm with its scale held constant (LN rule), per class as transformers writes them."""
    name = type(module).__name__

    def forward(x):
        centred = x - x.mean(-1, keepdim=True) if name in ("LayerNorm", "OlmoLayerNorm") else x
        eps = {"LayerNorm": getattr(module, "eps", None), "OlmoLayerNorm": 1e-5}.get(
            name, getattr(module, "variance_epsilon", getattr(module, "eps", None)))
        y = centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps).detach()
        if name.startswith("Gemma"):
            return y * (1 + module.weight)
        if getattr(module, "weight", None) is not None:
            y = y * module.weight
        return y + module.bias if getattr(module, "bias", None) is not None else y

    return forward


def _with_rules(model: nn.Module) -> nn.Module:
    """A copy of `model` whose norms, activation functions and gated MLPs follow the rules."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        name = type(module).__name__
        if name.endswith(("LayerNorm", "RMSNorm")):
            module.forward = _norm_forward(module)
        if name.endswith("MLP"):
            act_name = "act_fn" if hasattr(module, "act_fn") else "act"
            act = getattr(module, act_name)
            plain = act.forward
            act.forward = lambda x, plain=plain: _IdentityRule.apply(x, plain(x))
            if hasattr(module, "gate_proj"):
                module.forward = lambda x, m=module: m.down_proj(_HalfProduct.apply(m.act_fn(m.gate_proj(x)),
                                                                                    m.up_proj(x)))
    return model


def _reference(lm, kind: str, corrupted, answer_id: int, input_ids):
    """Per cell (window 1): the mean over corrupted copies of (clean - corrupted state) . the rules'
    coefficient of p(answer), taken on the corrupted run; the table without `low`."""
    spec = lm.architecture
    path, is_input = PLACES.get(kind, ("mlp_down_projection_path", True))
    addresses = [getattr(spec, path).format(layer=layer) for layer in range(lm.n_layers)]
    model = _with_rules(lm.model)
    states: dict[str, torch.Tensor] = {}

    def keeper(address):
        def on_input(module, args):
            states[address] = args[0]

        def on_output(module, args, output):
            first = output[0] if isinstance(output, tuple) else output
            states[address] = first.clone()  # Falcon adds into an MLP output in place: keep ours apart
            return (states[address].clone(), *output[1:]) if isinstance(output, tuple) else states[address].clone()

        return on_input if is_input else on_output

    def run(embeddings):
        handles = [model.get_submodule(spec.embedding).register_forward_hook(lambda m, a, o: embeddings)]
        for address in addresses:
            module = model.get_submodule(address)
            handles.append(module.register_forward_pre_hook(keeper(address)) if is_input
                           else module.register_forward_hook(keeper(address)))
        try:
            return model(input_ids=input_ids[None].expand(len(embeddings), -1)).logits[:, -1]
        finally:
            for handle in handles:
                handle.remove()

    with torch.no_grad():
        run(embeddings_of(lm, input_ids)[None])
        clean = {a: s.detach() for a, s in states.items()}
    with torch.enable_grad():
        logits = run(corrupted.detach().requires_grad_(True))
        probability = torch.softmax(logits, -1)[:, answer_id].sum()
        grads = dict(zip(addresses, torch.autograd.grad(probability, [states[a] for a in addresses])))
    width = lm.d_model // lm.n_heads
    table = []
    for address in addresses:
        product = (clean[address] - states[address].detach()) * grads[address]  # samples pos features
        if kind == "head":
            product = product.unflatten(-1, (lm.n_heads, -1)).sum(-1)
            assert product.shape[-1] * width == lm.d_model
        elif kind == "neurons":
            product = product[..., list(NEURONS)].sum(-1)
        else:
            product = product.sum(-1)
        table.append(product.mean(0))
    return torch.stack(table, dim=1)


@pytest.mark.parametrize("family", sorted(CONFIGS))
def test_relp_estimates_equal_the_rules_written_out(family):
    lm = cu.load_model(tiny_model(family), tiny_tokenizer(), dtype=torch.float64)
    kinds = ["hidden", "mlp", "attn", "head", MLPNeurons(NEURONS)]
    result = cu.trace(lm, PROMPT, SUBJECT, answer=ANSWER, kinds=kinds, samples=3, window=1, noise=0.5,
                      method="attribution", fixes=RELP, progress=False)
    scale = result.settings.noise_scale
    corrupted = corrupted_embeddings(embeddings_of(lm, result.input_ids), result.subject_range, GaussianNoise(scale),
                                     samples=3, scale=scale, seed=0)
    plain = cu.trace(lm, PROMPT, SUBJECT, answer=ANSWER, kinds=("mlp",), samples=3, window=1, noise=0.5,
                     method="attribution", fixes=AttributionFixes.none(), progress=False)
    for kind, name in zip(["hidden", "mlp", "attn", "head", "neurons"], result.kinds):
        expected = _reference(lm, kind, corrupted, result.answer_id, result.input_ids)
        got = result.scores[name] - result.low
        # the last MLP's other positions have no effect on the answer: the engine leaves them 0
        torch.testing.assert_close(got, expected.to(got.dtype), atol=1e-9, rtol=1e-6, msg=f"{family} {kind}")
    # the rules change the numbers: RelP is not the gradient
    assert not torch.allclose(result.scores["mlp"] - result.low, plain.scores["mlp"] - plain.low, rtol=1e-3, atol=0)


@pytest.mark.parametrize("family", ["llama", "olmo", "olmo2"])
def test_relevance_is_conserved_layer_by_layer(family):
    """Without biases, with the attention rule, relevance is conserved: at every block output the
    states times their coefficients sum to the answer's logit (Bach et al. 2015)."""
    lm = cu.load_model(tiny_model(family), tiny_tokenizer(), dtype=torch.float64)
    spec = lm.architecture
    points = [spec.embedding] + [spec.block_output(layer) for layer in range(lm.n_layers)]
    states = {}

    def keep(point):
        def store(state):
            state = state.detach().requires_grad_(True) if point == spec.embedding else state
            states[point] = state
            return state

        return store

    ids = lm.to_tokens(PROMPT)
    for rules, conserved in ((RelevanceRules(attention=True), True), (RelevanceRules(), False)):
        with torch.enable_grad(), relevance_rules(lm, rules), edit(lm.model, {p: keep(p) for p in points}):
            logit = lm.model(ids).logits[0, -1, 7]
            grads = torch.autograd.grad(logit, [states[p] for p in points])
        sums = torch.stack([(states[p] * g).sum() for p, g in zip(points, grads)]).detach()
        # the identity rule keeps f(x) / x 1e-6 from zero: conservation holds to about that
        assert torch.allclose(sums, logit.detach().expand_as(sums), rtol=1e-4) == conserved, (rules, sums, logit)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2", "falcon"])
def test_the_rules_leave_the_forward_as_it_was(family):
    lm = cu.load_model(tiny_model(family), tiny_tokenizer(), dtype=torch.float64)
    ids = lm.to_tokens(PROMPT)
    rules = RelevanceRules(attention=family != "falcon")
    with relevance_rules(lm, rules):
        inside = lm.logits(ids)
    # the attention rule runs the model's eager attention, which may round differently from sdpa
    lm.model.config._attn_implementation = "eager"
    torch.testing.assert_close(inside, lm.logits(ids), atol=1e-12, rtol=0)


def test_relp_settings_are_checked():
    with pytest.raises(ValueError, match="goes with relp=True"):
        AttributionFixes(relp_attention=True, qk_fix=False)
    with pytest.raises(ValueError, match="choose one"):
        AttributionFixes(relp=True, relp_attention=True)
    falcon = cu.load_model(tiny_model("falcon"), tiny_tokenizer())
    with pytest.raises(ValueError, match="relp_attention holds the attention probabilities constant"):
        cu.trace(falcon, PROMPT, SUBJECT, method="attribution", progress=False,
                 fixes=AttributionFixes(qk_fix=False, relp=True, relp_attention=True))
