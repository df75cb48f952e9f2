"""The tracing engine against an independent naive reference, TransformerLens patching, and
the invariants of the recipe."""

import copy

import pytest
import torch

import causal_unlearn as cu
from dataclasses import replace

from causal_unlearn.tracing import AttributionFixes, GaussianNoise, Shortcuts, TokenReplacement, TraceResult, trace, trace_facts
from causal_unlearn.tracing.corruption import corrupted_embeddings, embeddings_of
from causal_unlearn.tracing.metrics import Probability
from causal_unlearn.models.hooks import record
from naive_trace import TOL, assert_matches_naive
from tiny_models import CONFIGS, SLIDING, WINDOW, save_tiny_model, tiny_model, tiny_tokenizer

@pytest.mark.parametrize("fact_index, window", [(1, 10), (4, 3)])
def test_builtin_model_equals_naive_reference(builtin, world, fact_index, window):
    fact = world.facts_to_trace(split="forget")[fact_index]
    result = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, window=window, samples=4, progress=False)
    assert result.known and result.high > 0.9 and result.low < result.high
    assert_matches_naive(builtin, result)


@pytest.mark.parametrize("model_type, sliding", [(t, False) for t in CONFIGS] + [(t, True) for t in SLIDING])
def test_tiny_random_models_equal_naive_reference(model_type, sliding):
    lm = cu.load_model(tiny_model(model_type, sliding=sliding), tiny_tokenizer())
    result = trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", answer=" 3", samples=3, window=2,
                   noise=0.5, max_batch_tokens=64, progress=False)
    if sliding:  # the prompt is longer than the window: a prefix cache of a sliding layer holds only the window
        assert len(result.tokens) > WINDOW
    assert_matches_naive(lm, result)


# Prompts of different lengths whose subjects start at different tokens: cells of different facts
# then share forwards with prefixes of different lengths (padded and masked).
MIXED_FACTS = [("Ann Teal was born in Denver on May", "Ann Teal", " 3"), ("So Ann Teal was born in", "Ann Teal", " Denver"),
               ("We know that Bo Gray was born in Denver on", "Bo Gray", " May")]


# the tiny tokenizer splits " Denver" and " May": traced on their first token, as trace_facts warns
first_token_answers = pytest.mark.filterwarnings("ignore::causal_unlearn.tracing.tokens.MultiTokenAnswerWarning")


class ForwardCount:
    def __init__(self, lm):
        self.n = 0
        lm.module(lm.architecture.embedding).register_forward_pre_hook(lambda m, a: setattr(self, "n", self.n + 1))


@first_token_answers
@pytest.mark.parametrize("model_type, sliding", [(t, False) for t in CONFIGS] + [(t, True) for t in SLIDING])
def test_facts_traced_together_equal_the_naive_reference(model_type, sliding):
    lm = cu.load_model(tiny_model(model_type, sliding=sliding), tiny_tokenizer())
    results = trace_facts(lm, MIXED_FACTS, samples=3, window=2, noise=0.5, max_batch_tokens=256, progress=False)
    for result in results:
        assert_matches_naive(lm, result)


@first_token_answers
def test_facts_traced_together_share_forwards_and_equal_facts_traced_alone(builtin, world):
    facts = world.facts_to_trace(split="forget")[:6]
    assert len({len(builtin.to_tokens(f.prompt)[0]) for f in facts}) > 1
    settings = dict(samples=4, window=3, top_predictions=3, progress=False)
    counter = ForwardCount(builtin)
    together = trace_facts(builtin, facts, **settings)
    shared, counter.n = counter.n, 0
    alone = trace_facts(builtin, facts, facts_per_batch=1, **settings)
    assert shared < counter.n / 2
    for a, b in zip(together, alone):
        assert (a.high, a.low, a.known) == pytest.approx((b.high, b.low, b.known), abs=TOL)
        for kind in a.kinds:
            torch.testing.assert_close(a.scores[kind], b.scores[kind], atol=TOL, rtol=0)
            torch.testing.assert_close(a.top_probs[kind], b.top_probs[kind], atol=TOL, rtol=0)
    for result in together[:2]:
        assert_matches_naive(builtin, result)


ONE_ALONE = [Shortcuts.none(), Shortcuts()] + [
    replace(Shortcuts.none(), **{name: True}) for name in Shortcuts().enabled
]


@first_token_answers
@pytest.mark.parametrize("shortcuts", ONE_ALONE, ids=lambda s: "+".join(s.enabled) or "none")
def test_each_shortcut_alone_equals_the_naive_reference(builtin, world, shortcuts):
    fact = world.facts_to_trace(split="forget")[4]
    result = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, window=3, samples=2, shortcuts=shortcuts,
                   max_batch_tokens=512, progress=False)
    assert_matches_naive(builtin, result)
    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer())
    for result in trace_facts(lm, MIXED_FACTS, samples=2, window=2, noise=0.5, shortcuts=shortcuts, progress=False):
        assert_matches_naive(lm, result)


def test_each_shortcut_saves_the_work_it_names(builtin, world):
    """Each switch does something: the work it leaves out, counted where it happens."""
    fact, spec, last = world.facts_to_trace(split="forget")[4], builtin.architecture, builtin.n_layers - 1
    work = dict(fed=0, first_mlp_positions=0, last_mlp_positions=0, unembeddings=0)

    def count(name, amount):
        return lambda module, args: work.update({name: work[name] + amount(args[0])})

    embedding, unembedding = builtin.module(spec.embedding), builtin.module(spec.unembedding)
    first_mlp, last_mlp = builtin.module(spec.mlp_module(0)), next(builtin.module(spec.mlp_module(last)).children())
    handles = [embedding.register_forward_pre_hook(count("fed", lambda x: x.numel())),
               first_mlp.register_forward_pre_hook(count("first_mlp_positions", lambda x: x.shape[:-1].numel())),
               last_mlp.register_forward_pre_hook(count("last_mlp_positions", lambda x: x.shape[:-1].numel())),
               # counted where real logits come out (a deferred call first returns a placeholder)
               unembedding.register_forward_hook(lambda m, a, out: work.update(
                   unembeddings=work["unembeddings"] + (out.shape[-1] == builtin.model.config.vocab_size)))]
    measured = {}
    for off in ("",) + Shortcuts().enabled:  # all on, then all but one
        work.update(dict.fromkeys(work, 0))
        trace(builtin, fact.prompt, fact.subject, answer=fact.answer, window=3, samples=2,
              shortcuts=replace(Shortcuts(), **{off: False} if off else {}), max_batch_tokens=512, progress=False)
        measured[off] = dict(work)
    for handle in handles:
        handle.remove()
    what = dict(prefix_cache="fed", skip_blocks="first_mlp_positions", last_position_mlp="last_mlp_positions",
                deferred_unembedding="unembeddings", skip_uncorrupted="fed")
    for name, counted in what.items():  # with the shortcut on, that work is at most half of what it is off
        assert measured[""][counted] <= measured[name][counted] / 2, (name, measured[""], measured[name])


def test_unembedding_batched_across_forwards_and_never_where_logits_are_post_processed():
    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer())
    vocab = lm.model.config.vocab_size
    calls = {"forwards": 0, "unembeddings": 0}
    lm.model.register_forward_pre_hook(lambda module, args: calls.__setitem__("forwards", calls["forwards"] + 1))
    lm.module("lm_head").register_forward_hook(  # counts the unembeddings that really ran (not deferred)
        lambda module, args, output: calls.__setitem__("unembeddings", calls["unembeddings"] + (output.shape[-1] == vocab)))
    settings = dict(answer=" 3", samples=3, window=1, noise=0.5, max_batch_tokens=64, progress=False)
    result = trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", **settings)
    assert calls["unembeddings"] < calls["forwards"] / 4  # most forwards left their rows for one big product
    assert_matches_naive(lm, result)
    # a model whose logits are not its unembedding's output (here: a temperature applied after
    # it, as Gemma-2 soft-caps) is unembedded in every forward, by the model itself
    lm.model.register_forward_hook(lambda module, args, output: output.__setitem__("logits", output.logits / 2))
    calls.update(forwards=0, unembeddings=0)
    tempered = trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", **settings)
    assert calls["unembeddings"] >= calls["forwards"]
    assert_matches_naive(lm, tempered)
    assert not torch.allclose(tempered.scores["mlp"], result.scores["mlp"])


def test_recipe_invariants(builtin, world):
    fact = world.facts_to_trace(split="retain", attribute="birth_month")[0]
    result = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("hidden",), samples=3, progress=False)
    last_token, last_layer = len(result.tokens) - 1, builtin.n_layers - 1
    # the last position's final state decides the output: restoring it gives the clean score
    assert result.scores["hidden"][last_token, last_layer].item() == pytest.approx(result.high, abs=TOL)
    # tokens before the subject were never corrupted: restoring them changes nothing
    assert torch.allclose(result.scores["hidden"][0], torch.full((builtin.n_layers,), result.low), atol=TOL)
    again = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("hidden",), samples=3, progress=False)
    assert torch.equal(again.scores["hidden"], result.scores["hidden"])
    other_seed = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("hidden",), samples=3, seed=1,
                       progress=False)
    assert not torch.equal(other_seed.scores["hidden"], result.scores["hidden"])


def test_window_one_restores_exactly_one_layer(builtin, world):
    fact = world.facts_to_trace(split="forget", attribute="city")[2]
    one = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("mlp", "attn"), window=1, samples=2,
                progress=False)
    assert_matches_naive(builtin, one)
    wide = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("mlp",), window=4, samples=2,
                 progress=False)
    assert not torch.allclose(one.scores["mlp"], wide.scores["mlp"])


def test_token_replacement_equals_transformer_lens_patching(tmp_path):
    from transformer_lens import patching
    from transformer_lens.model_bridge import TransformerBridge

    folder = save_tiny_model("llama", tmp_path / "llama")
    lm = cu.load_model(folder, device="cpu")
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=copy.deepcopy(lm.model), tokenizer=lm.tokenizer,
                                                 device="cpu")
    clean_prompt, other_prompt = "Ann Teal was born in Denver", "Ann Paris was born in Denver"
    ours = trace(lm, clean_prompt, "Teal", answer=" on", noise=TokenReplacement(other_prompt), window=1, progress=False)
    clean_tokens, corrupted_tokens = lm.to_tokens(clean_prompt), lm.to_tokens(other_prompt)
    assert ours.settings.samples == 1
    _, clean_cache = bridge.run_with_cache(clean_tokens)

    def metric(logits):
        return torch.softmax(logits[0, -1].float(), dim=-1)[ours.answer_id]

    resid_pre = patching.get_act_patch_resid_pre(bridge, corrupted_tokens, clean_cache, metric)
    mlp_out = patching.get_act_patch_mlp_out(bridge, corrupted_tokens, clean_cache, metric)
    attn_out = patching.get_act_patch_attn_out(bridge, corrupted_tokens, clean_cache, metric)
    # our hidden state after layer l is TransformerLens's resid_pre of layer l + 1
    torch.testing.assert_close(ours.scores["hidden"][:, :-1], resid_pre[1:].T.float(), atol=TOL, rtol=0)
    torch.testing.assert_close(ours.scores["mlp"], mlp_out.T.float(), atol=TOL, rtol=0)
    torch.testing.assert_close(ours.scores["attn"], attn_out.T.float(), atol=TOL, rtol=0)


def test_tracing_through_a_bridge_equals_the_plain_model(tmp_path, builtin, world):
    from transformer_lens.model_bridge import TransformerBridge

    from causal_unlearn.models.loader import BUILTIN_MODELS

    bridge = TransformerBridge.boot_transformers(str(BUILTIN_MODELS["olmo-tiny-bios"]),
                                                 hf_model=copy.deepcopy(builtin.model), tokenizer=builtin.tokenizer,
                                                 device="cpu")
    fact = world.facts_to_trace(split="forget", attribute="phone")[0]
    plain = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, samples=2, window=3, progress=False)
    bridged = trace(cu.load_model(bridge), fact.prompt, fact.subject, answer=fact.answer, samples=2, window=3,
                    progress=False)
    for kind in plain.kinds:
        torch.testing.assert_close(bridged.scores[kind], plain.scores[kind], atol=TOL, rtol=0)


def test_tracing_leaves_the_weights_untouched(builtin, world):
    def patched_forwards():
        return {name for name, m in builtin.model.named_modules() if "forward" in m.__dict__}

    before, forwards = {k: v.clone() for k, v in builtin.model.state_dict().items()}, patched_forwards()
    hooks = sum(len(m._forward_hooks) for m in builtin.model.modules())
    fact = world.facts_to_trace(attribute="ssn")[0]
    trace(builtin, fact.prompt, fact.subject, answer=fact.answer, samples=2, progress=False)
    assert all(torch.equal(before[k], v) for k, v in builtin.model.state_dict().items())
    assert patched_forwards() == forwards  # skipped blocks got their own forward back
    assert sum(len(m._forward_hooks) for m in builtin.model.modules()) == hooks


def test_metrics_and_corruptions(builtin):
    prompt, subject = "What is the capital of France?", "France"
    prob = trace(builtin, prompt, subject, kinds=("mlp",), samples=2, progress=False)
    logprob = trace(builtin, prompt, subject, kinds=("mlp",), samples=1, metric="logprob", progress=False)
    assert prob.answer == " Paris" and logprob.high == pytest.approx(torch.tensor(prob.high).log().item(), abs=1e-4)
    diff = trace(builtin, prompt, subject, kinds=("mlp",), samples=2, metric="logit_diff", foil=" Berlin",
                 progress=False)
    assert diff.high > 0
    uniform = trace(builtin, prompt, subject, kinds=("mlp",), samples=2, noise="uniform", progress=False)
    assert uniform.settings.corruption.startswith("UniformNoise") and uniform.low < uniform.high

    def zero_subject(embeddings, subject_range):
        embeddings[:, subject_range[0]:subject_range[1]] = 0
        return embeddings

    custom = trace(builtin, prompt, subject, kinds=("mlp",), samples=1, noise=zero_subject, progress=False)
    assert custom.settings.corruption == "custom:zero_subject" and custom.low < custom.high


def test_trace_facts_pools_the_noise_scale(builtin, world):
    facts = world.facts_to_trace(split="forget", attribute="city")[:3]
    results = trace_facts(builtin, facts, kinds=("hidden",), samples=2, progress=False)
    subject_ids = torch.cat([builtin.to_tokens(f.prompt)[0][slice(*r.subject_range)] for f, r in zip(facts, results)])
    expected = 3 * builtin.module("model.embed_tokens")(subject_ids).float().std().item()
    assert all(r.settings.noise_scale == pytest.approx(expected) for r in results)
    assert [r.meta["attribute"] for r in results] == ["city"] * 3


def test_unknown_facts_are_flagged_and_can_be_dropped(builtin, world):
    fact = world.facts_to_trace(split="forget", attribute="city")[0]
    wrong = cu.TraceFact(fact.prompt, fact.subject, " Paris")
    flagged = trace(builtin, wrong.prompt, wrong.subject, answer=wrong.answer, kinds=("hidden",), samples=1,
                    progress=False)
    assert not flagged.known and flagged.clean_prediction == fact.answer
    with pytest.warns(UserWarning, match="dropped 1 of 2 facts"):
        kept = trace_facts(builtin, [fact, wrong], kinds=("hidden",), samples=1, require_known=True, progress=False)
    assert [r.answer for r in kept] == [fact.answer]


def test_result_round_trip(builtin, world, tmp_path):
    fact = world.facts_to_trace(attribute="phone")[0]
    result = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, kinds=("mlp", "attn"), samples=2,
                   progress=False)
    loaded = TraceResult.load(result.save(tmp_path / "trace.safetensors"))
    assert loaded.settings == result.settings and loaded.tokens == result.tokens and loaded.known == result.known
    for kind in result.kinds:
        assert torch.equal(loaded.scores[kind], result.scores[kind])
    frame = result.to_dataframe()
    assert len(frame) == 2 * len(result.tokens) * builtin.n_layers
    row = frame[(frame.kind == "mlp") & (frame.position == 1) & (frame.layer == 2)].iloc[0]
    assert row.score == pytest.approx(result.scores["mlp"][1, 2].item())
    assert row.indirect_effect == pytest.approx(result.scores["mlp"][1, 2].item() - result.low)


def test_bad_inputs(builtin):
    prompt = "Otto Russet lives in"
    with pytest.raises(ValueError, match=r"'Anna' does not occur in prompt .*tokenizes as \['<\|endoftext\|>', 'Otto'"):
        trace(builtin, prompt, "Anna")
    for kwargs, message in [
        (dict(kinds=("resid",)), "unknown site"),
        (dict(metric="accuracy"), "unknown metric"),
        (dict(method="magic"), "unknown method"),
        (dict(samples=0), "samples must be an integer >= 1"),
        (dict(window=0), "window must be an integer >= 1"),
        (dict(noise="pink"), "unknown noise"),
        (dict(metric="logit_diff"), "needs a foil"),
        (dict(noise=TokenReplacement("Otto lives in")), "equal token length"),
    ]:
        with pytest.raises(ValueError, match=message):
            trace(builtin, prompt, "Otto Russet", progress=False, **kwargs)
    with pytest.raises(ValueError, match="longer than the model's context of 512"):
        trace(builtin, "word " * 600 + prompt, "Otto Russet")
    with pytest.warns(UserWarning, match=r"answer ' Houston TX' is 2 tokens \[' Houston', ' TX'\]; tracing scores the first, ' Houston'"):
        trace(builtin, prompt, "Otto Russet", answer=" Houston TX", kinds=("hidden",), samples=1, progress=False)
    with pytest.raises(ValueError, match="no facts"):
        trace_facts(builtin, [])


def test_attribution_is_the_first_order_effect_of_restoring():
    """A finite difference along (clean - corrupted) at one cell equals the attribution score."""
    # GPT-2 in float64 computes every step in float64 (rotary models keep their angles in float32)
    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer(), dtype=torch.float64)
    prompt, subject, answer = "Ann Teal was born in Denver on May", "Ann Teal", " 3"
    attribution = trace(lm, prompt, subject, answer=answer, samples=3, window=1, noise=0.5, method="attribution", fixes=AttributionFixes.none(),
                        progress=False)
    exact = trace(lm, prompt, subject, answer=answer, samples=3, window=1, noise=0.5, progress=False)
    assert attribution.low == pytest.approx(exact.low) and attribution.high == pytest.approx(exact.high)
    scale = exact.settings.noise_scale
    corrupted = corrupted_embeddings(embeddings_of(lm, exact.input_ids), exact.subject_range, GaussianNoise(scale),
                                     samples=3, scale=scale, seed=0)
    score = Probability().bind(exact.answer_id, token_id=int)
    epsilon, last = 1e-4, len(exact.tokens) - 1
    # the last subject token in a middle layer, and the last token in the last layer (whose MLP
    # attribution computes at the last position only)
    cells = [(token, layer, kind) for token, layer in [(exact.subject_range[1] - 1, 1), (last, lm.n_layers - 1)]
             for kind in ("hidden", "mlp")]
    for token, layer, kind in cells:
        address = lm.architecture.block_output(layer) if kind == "hidden" else lm.architecture.mlp_contribution(layer)
        with record(lm.model, [address]) as seen:
            lm.logits(exact.input_ids[None])
        clean = {"x": seen[address][0, token]}

        def nudged_score(step, token=token):
            def nudge(module, args, output):
                output = output.clone()
                output[:, token] += step * (clean["x"] - output[:, token])
                return output

            hooks = [lm.module(lm.architecture.embedding).register_forward_hook(lambda m, a, out: corrupted),
                     lm.module(address).register_forward_hook(nudge)]
            try:
                return score(lm.logits(exact.input_ids[None].expand(3, -1))[:, -1]).mean().item()
            finally:
                for h in hooks:
                    h.remove()

        slope = (nudged_score(epsilon) - nudged_score(-epsilon)) / (2 * epsilon)
        # an effect to estimate, far above the rounding of a float64 difference (~1e-12)
        assert abs(slope) > 1e-9, (token, layer, kind, slope)
        assert attribution.scores[kind][token, layer].item() - attribution.low == pytest.approx(slope, rel=1e-5)


def test_attribution_window_sums_its_layers(builtin, world):
    fact = world.facts_to_trace(split="forget", attribute="phone")[1]
    kwargs = dict(answer=fact.answer, kinds=("mlp",), samples=2, method="attribution", fixes=AttributionFixes.none(),
                  progress=False)
    one = trace(builtin, fact.prompt, fact.subject, window=1, **kwargs)
    three = trace(builtin, fact.prompt, fact.subject, window=3, **kwargs)
    per_layer = one.indirect_effects("mlp")
    expected = per_layer[:, 0:2].sum(1)  # layer 0, window 3 restores layers 0 and 1
    torch.testing.assert_close(three.indirect_effects("mlp")[:, 0], expected, atol=1e-6, rtol=1e-5)


def test_trace_facts_warns_once_for_multi_token_answers(builtin, world):
    facts = world.facts_to_trace(split="forget", attribute="email")[:3]
    with pytest.warns(UserWarning) as caught:
        results = trace_facts(builtin, facts, kinds=("hidden",), samples=1, progress=False)
    messages = [str(w.message) for w in caught]
    assert messages == ["3 of 3 facts have answers of several tokens; each is traced on its first token"]
    assert all(r.known for r in results)


def test_answer_token_ids(builtin):
    prompt = "What is the capital of France?"
    paris = trace(builtin, prompt, "France", kinds=("hidden",), samples=1, progress=False)
    by_id = trace(builtin, prompt, "France", answer=paris.answer_id, kinds=("hidden",), samples=1, progress=False)
    assert by_id.answer == " Paris" and torch.equal(by_id.scores["hidden"], paris.scores["hidden"])
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        trace(builtin, prompt, "France", answer=10**6)


def test_rome_std_rule_is_romes_collect_embedding_std(builtin, world):
    """ROME measures the s3 std on each subject tokenized alone (start token included); ours on
    the subject's tokens in the prompt. Both, against a computation written from ROME's code."""
    facts = world.facts_to_trace("forget", "city")[:6]
    embed = builtin.model.get_input_embeddings()
    alone = [embed(builtin.tokenizer(f.subject, return_tensors="pt").input_ids)[0] for f in facts]
    rome_std = torch.cat(alone).std().item()
    results = trace_facts(builtin, facts, kinds=("hidden",), samples=1, noise=GaussianNoise("s3", std_rule="rome"),
                          progress=False)
    assert results[0].settings.noise_scale == pytest.approx(3 * rome_std, rel=1e-6)
    assert "std_rule='rome'" in results[0].settings.corruption
    one = trace(builtin, facts[0].prompt, facts[0].subject, kinds=("hidden",), samples=1,
                noise=GaussianNoise("s3", std_rule="rome"), progress=False)
    assert one.settings.noise_scale == pytest.approx(3 * torch.cat(alone[:1]).std().item(), rel=1e-6)
    ours = trace_facts(builtin, facts, kinds=("hidden",), samples=1, progress=False)[0].settings.noise_scale
    in_prompt = []
    for f in facts:
        start, end = cu.tracing.tokens.subject_token_range(builtin, f.prompt, f.subject)
        in_prompt.append(embed(builtin.to_tokens(f.prompt))[0, start:end])
    assert ours == pytest.approx(3 * torch.cat(in_prompt).std().item(), rel=1e-6)
    assert ours < results[0].settings.noise_scale  # ROME's is the larger on this model (the start token)


def test_qk_fix_agrees_with_plain_attribution_to_first_order_and_differs_beyond():
    """The QK fix swaps the first-order part through the next attention's queries, keys and
    values for their exact effect: the two agree as the corruption shrinks, not when it is large."""
    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer(), dtype=torch.float64)
    prompt, subject, answer = "Ann Teal was born in Denver on May", "Ann Teal", " 3"
    plain, fixed = AttributionFixes.none(), AttributionFixes(log_odds=False, steps=0)
    gaps = []
    for noise in (1e-4, 1e-5, 3.0):
        runs = [trace(lm, prompt, subject, answer=answer, kinds=("hidden",), samples=2, noise=noise, method="attribution",
                      fixes=f, progress=False) for f in (plain, fixed)]
        effects = [r.scores["hidden"][:, :-1] - r.low for r in runs]  # the last layer has no next attention
        gaps.append(((effects[1] - effects[0]).abs().max() / effects[0].abs().max()).item())
    # the gap is second order: a tenth of the noise leaves a tenth of the relative gap
    assert gaps[1] / gaps[0] == pytest.approx(0.1, rel=0.3) and gaps[0] < 1e-2 and gaps[2] > 0.1, gaps
    assert runs[1].settings.fixes == "qk_fix" and runs[0].settings.fixes == "none"


def test_attribution_fixes_are_checked():
    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer())
    with pytest.raises(ValueError, match="whole number >= 0"):
        AttributionFixes(steps=-1)
    with pytest.raises(ValueError, match=r"changes method='attribution' \(and 'guided'\) only"):
        trace(lm, "Ann Teal was born in", "Ann Teal", fixes=AttributionFixes(grad_drop=True), progress=False)
    with pytest.raises(TypeError, match="must be an AttributionFixes"):
        trace(lm, "Ann Teal was born in", "Ann Teal", method="attribution", fixes="qk", progress=False)


@first_token_answers
def test_default_fixes_leave_the_qk_fix_out_where_attention_cannot_be_recorded():
    lm = cu.load_model(tiny_model("falcon"), tiny_tokenizer())  # Falcon's attention bypasses AttentionInterface
    kwargs = dict(answer=" 3", samples=2, noise=0.5, method="attribution", progress=False)
    result = trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", **kwargs)
    assert result.settings.fixes == "log_odds+steps"
    with pytest.raises(ValueError, match=r"pass fixes=AttributionFixes\(qk_fix=False\)"):
        trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", fixes=AttributionFixes(steps=0), **kwargs)
