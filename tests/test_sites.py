"""Sites, metrics and the settings object: every built-in site against the naive reference on
every tiny architecture, a metric written as a function against the built-in it spells out,
and TraceConfig's single place for every setting."""

import warnings

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.tracing import AttributionFixes, TraceConfig, default_window, trace
from naive_trace import TOL, assert_matches_naive
from tiny_models import CONFIGS, SLIDING, tiny_model, tiny_tokenizer

PROMPT, SUBJECT, ANSWER = "Ann Teal was born in Denver on May", "Ann Teal", " 3"


@pytest.mark.filterwarnings("ignore:window=")
@pytest.mark.parametrize("model_type, sliding", [(t, False) for t in CONFIGS] + [(t, True) for t in SLIDING])
def test_every_site_equals_the_naive_reference(model_type, sliding):
    lm = cu.load_model(tiny_model(model_type, sliding=sliding), tiny_tokenizer())
    neurons = [0, 3, 17]
    down = lm.architecture.mlp_down_projection_path
    result = trace(lm, PROMPT, SUBJECT, answer=ANSWER, samples=2, window=2, noise=0.5, max_batch_tokens=96,
                   kinds=("head", "resid_pre", cu.MLPNeurons(neurons), cu.ModuleSite(down, input=True, name="down_in")),
                   progress=False)
    assert result.scores["head"].shape == (len(result.tokens), lm.n_layers, lm.n_heads)
    assert_matches_naive(lm, result, kinds=["head", "resid_pre", "mlp_neurons[0,3,17]"], neurons=neurons)
    # a module site is the same state as the built-in it names: all the MLP's neurons at once
    everything = trace(lm, PROMPT, SUBJECT, answer=ANSWER, samples=2, noise=0.5, progress=False,
                       kinds=(cu.MLPNeurons(range(lm.module(down.format(layer=0)).weight.shape[0 if model_type == "gpt2" else 1])),))
    torch.testing.assert_close(result.scores["down_in"], everything.scores[everything.kinds[0]], atol=TOL, rtol=0)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])  # a gated MLP and GPT-2's Conv1D
def test_each_neuron_cell_equals_the_naive_reference(model_type):
    """The neuron site's cell (token, layer, n) restores hidden unit n alone: the naive trace of
    that one neuron, one forward per cell."""
    lm = cu.load_model(tiny_model(model_type), tiny_tokenizer())
    result = trace(lm, PROMPT, SUBJECT, answer=ANSWER, samples=2, noise=0.5, kinds=("neuron",), progress=False)
    assert result.scores["neuron"].shape == (len(result.tokens), lm.n_layers, cu.patching.NEURON.n_units(lm))
    for neuron in (0, 17, cu.patching.NEURON.n_units(lm) - 1):
        single = trace(lm, PROMPT, SUBJECT, answer=ANSWER, samples=2, noise=0.5, kinds=(cu.MLPNeurons([neuron]),),
                       progress=False)
        assert_matches_naive(lm, single, kinds=[f"mlp_neurons[{neuron}]"], neurons=[neuron])
        torch.testing.assert_close(result.scores["neuron"][..., neuron], single.scores[f"mlp_neurons[{neuron}]"],
                                   atol=TOL, rtol=0)


def test_every_head_together_is_the_attention_output_at_window_one(builtin, world):
    """Restoring all heads of a layer at a token restores the attention output there: the
    head site summed over its units' features is the attn site with window 1."""
    fact = world.facts_to_trace(split="forget")[4]
    heads = cu.ModuleSite(builtin.architecture.attn_output_projection_path, input=True)
    result = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, samples=3, window=1, progress=False,
                   kinds=(heads, "attn"))
    torch.testing.assert_close(result.scores[heads.name], result.scores["attn"], atol=TOL, rtol=0)
    assert result.scores["attn"].std() > 1e-3


def test_resid_pre_is_the_previous_block_output(builtin, world):
    fact = world.facts_to_trace(split="forget")[4]
    result = trace(builtin, fact.prompt, fact.subject, answer=fact.answer, samples=3, progress=False,
                   kinds=("hidden", "resid_pre"))
    torch.testing.assert_close(result.scores["resid_pre"][:, 1:], result.scores["hidden"][:, :-1], atol=TOL, rtol=0)


@pytest.mark.parametrize("method", ["exact", "attribution"])
def test_a_metric_written_as_a_function_equals_the_built_in(builtin, world, method):
    fact = world.facts_to_trace(split="forget")[4]
    answer_id = builtin.to_tokens(fact.prompt + fact.answer)[0, len(builtin.to_tokens(fact.prompt)[0])].item()
    settings = dict(answer=fact.answer, samples=3, window=1, method=method, kinds=("hidden", "mlp", "head"),
                    progress=False)
    built_in = trace(builtin, fact.prompt, fact.subject, metric="logprob", **settings)
    ours = trace(builtin, fact.prompt, fact.subject, metric=lambda logits: logits.log_softmax(-1)[:, answer_id], **settings)
    assert ours.low == pytest.approx(built_in.low, abs=TOL) and ours.high == pytest.approx(built_in.high, abs=TOL)
    for kind in built_in.kinds:
        torch.testing.assert_close(ours.scores[kind], built_in.scores[kind], atol=TOL, rtol=0)
    assert built_in.scores["mlp"].std() > 1e-2


def test_built_in_metrics_are_what_they_say(builtin):
    prompt, subject = "Otto Russet lives in", "Otto Russet"
    settings = dict(kinds=("hidden",), samples=2, window=1, progress=False)
    prob = trace(builtin, prompt, subject, **settings)
    answer, runner_up = prob.answer_id, None
    logits = builtin.logits(builtin.to_tokens(prompt))[0, -1]
    runner_up = int(logits.topk(2).indices[1])
    mass = trace(builtin, prompt, subject, metric=cu.ProbabilityMass([answer, runner_up]), **settings)
    probs = logits.float().softmax(-1)
    assert mass.high == pytest.approx((probs[answer] + probs[runner_up]).item(), abs=1e-6)
    diff = trace(builtin, prompt, subject, metric=cu.LogitDifference(runner_up), **settings)
    assert diff.high == pytest.approx((logits[answer] - logits[runner_up]).item(), abs=1e-5)
    assert diff.settings.metric == f"logit_diff(foil={runner_up})"
    with pytest.raises(ValueError, match="foil"):
        trace(builtin, prompt, subject, metric=cu.LogitDifference(answer), **settings)


def test_a_metric_that_returns_the_wrong_shape_is_refused_clearly(builtin):
    with pytest.raises(ValueError, match="one score per row"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", metric=lambda logits: logits.sum(), samples=1,
              kinds=("hidden",), progress=False)


def test_trace_config_holds_every_setting_once(builtin):
    config = TraceConfig(kinds=("head",), samples=2)
    via_config = trace(builtin, "Otto Russet lives in", "Otto Russet", config=config, progress=False)
    via_keywords = trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=("head",), samples=2, progress=False)
    torch.testing.assert_close(via_config.scores["head"], via_keywords.scores["head"], atol=0, rtol=0)
    # the window scales with depth, is recorded, and the recorded config is the one used
    assert via_config.settings.window == default_window(builtin.n_layers) == 2
    assert via_config.config.window == 2 and via_config.config.kinds == ("head",)
    overridden = trace(builtin, "Otto Russet lives in", "Otto Russet", config=config, samples=1, kinds=("hidden",),
                       progress=False)
    assert overridden.settings.samples == 1 and overridden.kinds == ["hidden"]
    with pytest.raises(TypeError, match=r"unknown settings \['sample'\]"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", sample=3)
    with pytest.raises(TypeError, match="config must be a TraceConfig"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", config=dict(samples=3))
    with pytest.raises(ValueError, match="samples"):
        TraceConfig(samples=0)  # checked when the config is made, before any model is touched
    with pytest.warns(UserWarning, match="half the model or more"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=("mlp",), window=4, samples=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=("mlp",), samples=1, progress=False)


def test_sites_that_do_not_exist_are_refused_before_any_work(builtin):
    with pytest.raises(ValueError, match="has no module 'model.layers.0.nope'"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=(cu.ModuleSite("model.layers.{layer}.nope"),))
    with pytest.raises(ValueError, match="neuron 9999 is out of range"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=(cu.MLPNeurons([1, 9999]),))
    with pytest.raises(ValueError, match="template with {layer}"):
        cu.ModuleSite("model.layers.0.mlp")
    with pytest.raises(ValueError, match="MLPNeurons"):
        trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=("mlp_neurons",))


def test_attribution_estimates_heads_to_first_order():
    """Attribution of a head cell is the gradient along the head's clean - corrupted output:
    on a float64 GPT-2, near the exact effect where restoring changes little."""
    lm = cu.load_model(tiny_model("gpt2"), tiny_tokenizer(), dtype=torch.float64)
    settings = dict(answer=ANSWER, samples=3, noise=0.05, kinds=("head",), progress=False)
    exact = trace(lm, PROMPT, SUBJECT, **settings)
    estimate = trace(lm, PROMPT, SUBJECT, method="attribution", fixes=AttributionFixes.none(), **settings)
    exact_effect, estimated = exact.scores["head"] - exact.low, estimate.scores["head"] - estimate.low
    assert exact_effect.abs().max() > 1e-6
    torch.testing.assert_close(estimated, exact_effect, atol=exact_effect.abs().max().item() * 0.05, rtol=0)
