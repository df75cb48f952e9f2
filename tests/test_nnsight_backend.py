"""The nnsight backend computes the engine's numbers: locally, through the serialized remote path
(`remote="local"`, the request run as NDIF would run it), and from an nnsight model."""

import importlib.abc
import sys

import pytest
import torch
from nnsight import TransformersModel
from nnsight.intervention.backends.local import LocalSimulationBackend

import causal_unlearn as cu
from causal_unlearn.models.loader import BUILTIN_MODELS
from tiny_models import CONFIGS, SLIDING, tiny_model, tiny_tokenizer

PROMPT, SUBJECT = "Otto Russet was born on", "Otto Russet"


def assert_same_trace(ours, theirs, tolerance=1e-5):
    assert ours.answer_id == theirs.answer_id and ours.subject_range == theirs.subject_range
    assert ours.high == pytest.approx(theirs.high, abs=tolerance) and ours.low == pytest.approx(theirs.low, abs=tolerance)
    assert set(ours.scores) == set(theirs.scores)
    for kind in ours.scores:
        torch.testing.assert_close(ours.scores[kind], theirs.scores[kind], atol=tolerance, rtol=0)


@pytest.fixture
def server_without_this_package(monkeypatch):
    """A server has nnsight and torch but not this package. remote='local' hides the package's
    modules while it deserializes a request, yet an installed package (pip or editable) can
    still be imported again from site-packages; refuse that, as a server would."""
    hide, restore = LocalSimulationBackend._hide_local_modules, LocalSimulationBackend._restore

    class NotOnTheServer(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.partition(".")[0] == "causal_unlearn":
                raise ModuleNotFoundError(f"No module named {name!r} (the request referenced this package)")

    refuse = NotOnTheServer()

    def hiding(self):
        hidden = hide(self)
        sys.meta_path.insert(0, refuse)
        return hidden

    def restoring(self, hidden):
        sys.meta_path.remove(refuse)
        restore(self, hidden)

    monkeypatch.setattr(LocalSimulationBackend, "_hide_local_modules", hiding)
    monkeypatch.setattr(LocalSimulationBackend, "_restore", restoring)


@pytest.mark.parametrize("settings", [
    dict(samples=4),
    dict(samples=2, window=3, metric="logprob", answer=" February", kinds=("mlp", "attn")),
    dict(noise=cu.TokenReplacement("Ada Cobalt was born on"), window=1, metric="logit_diff", answer=" May", foil=" June"),
])
def test_nnsight_backend_equals_engine_on_builtin(builtin, settings):
    engine = cu.trace(builtin, PROMPT, SUBJECT, progress=False, **settings)
    through_nnsight = cu.trace(builtin, PROMPT, SUBJECT, backend="nnsight", **settings)
    assert_same_trace(through_nnsight, engine)
    assert engine.high != engine.low and engine.scores["mlp"].std() > 1e-3  # a trace with something to get wrong


def test_serialized_remote_request_equals_engine(builtin, server_without_this_package):
    """remote='local' serializes the request, hides this package (a server does not have it),
    deserializes and runs it: the path NDIF takes, without the network."""
    engine = cu.trace(builtin, PROMPT, SUBJECT, samples=3, window=4, progress=False)
    remote = cu.trace(builtin, PROMPT, SUBJECT, samples=3, window=4, backend="nnsight", remote="local")
    assert_same_trace(remote, engine)


@pytest.mark.parametrize("model_type, sliding", [(t, False) for t in CONFIGS] + [(t, True) for t in SLIDING])
def test_nnsight_backend_equals_engine_on_tiny_architectures(model_type, sliding):
    lm = cu.load_model(tiny_model(model_type, sliding=sliding), tiny_tokenizer())
    sites = ("hidden", "mlp", "attn", "head", "resid_pre", cu.MLPNeurons([0, 5]),
             cu.ModuleSite(lm.architecture.mlp_module_path, input=True))
    settings = dict(answer=" 3", samples=2, window=2, noise=0.5, max_batch_tokens=64, kinds=sites)
    engine = cu.trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", progress=False, **settings)
    assert_same_trace(cu.trace(lm, "Ann Teal was born in Denver on May", "Ann Teal", backend="nnsight", **settings),
                      engine)


def test_heads_and_a_metric_of_ones_own_through_the_serialized_remote_path(builtin, server_without_this_package):
    """A built-in site of units and a user's metric (a plain function, sent with the request)."""
    def log_odds(logits):
        log_probs = logits.log_softmax(-1)
        return log_probs[:, 937] - torch.log1p(-log_probs[:, 937].exp())

    settings = dict(samples=2, kinds=("head",), metric=log_odds)
    engine = cu.trace(builtin, PROMPT, SUBJECT, progress=False, **settings)
    assert_same_trace(cu.trace(builtin, PROMPT, SUBJECT, backend="nnsight", remote="local", **settings), engine)
    # a function spelling out a built-in gives the built-in's numbers
    settings = dict(samples=2, kinds=("hidden",), answer=" February")
    built_in = cu.trace(builtin, PROMPT, SUBJECT, metric="logprob", progress=False, **settings)
    spelled_out = cu.trace(builtin, PROMPT, SUBJECT, backend="nnsight", **settings,
                           metric=lambda logits: logits.log_softmax(-1)[:, built_in.answer_id])
    assert_same_trace(spelled_out, built_in)
    assert built_in.scores["hidden"].std() > 1e-2


def test_trace_facts_pools_the_same_noise_through_nnsight(builtin, world):
    facts = world.facts_to_trace(attribute="city")[:2]
    engine = cu.trace_facts(builtin, facts, kinds=("mlp",), samples=2, progress=False)
    through_nnsight = cu.trace_facts(builtin, facts, kinds=("mlp",), samples=2, backend="nnsight", progress=False)
    for ours, theirs in zip(through_nnsight, engine):
        assert ours.settings.noise_scale == pytest.approx(theirs.settings.noise_scale, rel=1e-6)
        assert_same_trace(ours, theirs)


def test_nnsight_model_loads_and_a_meta_model_traces_only_remotely(builtin, server_without_this_package):
    """load_model takes an nnsight model: with weights it is an ordinary model (same logits);
    without (meta device, as for a model NDIF hosts) it traces only through a request."""
    folder = str(BUILTIN_MODELS["olmo-tiny-bios"])
    ids = builtin.to_tokens(PROMPT)
    dispatched = cu.load_model(TransformersModel(folder, task="text-generation", dispatch=True))
    torch.testing.assert_close(dispatched.logits(ids), builtin.logits(ids))

    meta = cu.load_model(TransformersModel(folder, task="text-generation"))  # nnsight loads no weights until a request runs
    assert meta.is_remote_only and meta.device.type == "cpu" and meta.n_layers == builtin.n_layers
    with pytest.raises(ValueError, match="not on this machine.*remote=True"):
        cu.trace(meta, PROMPT, SUBJECT)
    engine = cu.trace(builtin, PROMPT, SUBJECT, samples=2, window=4, progress=False)
    assert_same_trace(cu.trace(meta, PROMPT, SUBJECT, samples=2, window=4, backend="nnsight", remote="local"), engine)


def test_wrapping_in_nnsight_leaves_weights_and_engine_results_unchanged(world):
    lm = cu.load_model("olmo-tiny-bios")
    weights = {name: p.clone() for name, p in lm.model.named_parameters()}
    before = cu.trace(lm, PROMPT, SUBJECT, samples=2, progress=False)
    cu.trace(lm, PROMPT, SUBJECT, samples=2, kinds=("hidden",), backend="nnsight")
    after = cu.trace(lm, PROMPT, SUBJECT, samples=2, progress=False)
    assert_same_trace(after, before, tolerance=0)
    assert all(torch.equal(p, weights[name]) for name, p in lm.model.named_parameters())


@pytest.mark.parametrize("settings, message", [
    (dict(backend="jax"), "unknown backend 'jax'"),
    (dict(remote=True), "remote tracing runs through nnsight"),
    (dict(backend="nnsight", remote="yes"), "remote must be False, True"),
    (dict(backend="nnsight", method="attribution"), "runs method='exact'"),
    (dict(backend="nnsight", top_predictions=3), "without top_predictions"),
])
def test_bad_backend_settings_are_refused(builtin, settings, message):
    with pytest.raises(ValueError, match=message):
        cu.trace(builtin, PROMPT, SUBJECT, **settings)
