"""Every public function, given what a new user might pass by mistake: a clear, specific error
(the exception a Python user expects, and a message that says what was wrong and what to do),
never a traceback from deep inside torch or transformers and never a silent wrong answer."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.tracing import GaussianNoise, TokenReplacement
from tiny_models import tiny_model, tiny_tokenizer

PROMPT, SUBJECT = "Otto Russet lives in", "Otto Russet"


@dataclass
class Context:
    lm: cu.LoadedModel
    world: cu.BiosWorld
    trace: cu.TraceResult
    tmp: Any


@pytest.fixture(scope="module")
def ctx(builtin, world, tmp_path_factory):
    lm = builtin.copy()  # a case whose check were missing must not edit the shared model
    trace = cu.trace(lm, PROMPT, SUBJECT, kinds=("mlp",), samples=2, window=3, progress=False)
    return Context(lm, world, trace, tmp_path_factory.mktemp("bad_inputs"))


def _trace(**kwargs):
    return lambda c: cu.trace(c.lm, kwargs.pop("prompt", PROMPT), kwargs.pop("subject", SUBJECT),
                              progress=False, **{"kinds": ("mlp",), "samples": 1, "window": 3, **kwargs})


def _unlearn(**kwargs):
    def call(c):
        forget = kwargs.pop("forget", c.world.forget[:4])
        retain = kwargs.pop("retain", c.world.retain[:4])
        return cu.unlearn(kwargs.pop("model", c.lm), forget, retain, progress=False,
                          **{"layers": [0], "epochs": 1, **kwargs})
    return call


def _evaluate(**kwargs):
    def call(c):
        forget = kwargs.pop("forget", c.world.forget[:2])
        retain = kwargs.pop("retain", c.world.retain[:2])
        return cu.evaluate(kwargs.pop("model", c.lm), forget, retain, progress=False, max_new_tokens=4, **kwargs)
    return call


def _localize(effect, **kwargs):
    from causal_unlearn.tracing.average import TOKEN_GROUPS, AveragedEffects

    def call(c):
        mean = torch.zeros(len(TOKEN_GROUPS), len(effect))
        mean[TOKEN_GROUPS.index("last token")] = torch.tensor(effect, dtype=torch.float32)
        count = torch.ones_like(mean, dtype=torch.long)
        effects = AveragedEffects(TOKEN_GROUPS, "indirect_effect", 0.95, {"mlp": mean}, {"mlp": mean}, {"mlp": mean},
                                  {"mlp": count})
        return cu.localize(effects, **kwargs)
    return call


def _saved(c, name: str, content: bytes) -> str:
    path = c.tmp / name
    path.write_bytes(content)
    return str(path)


def _truncated_trace(c) -> str:
    whole = c.trace.save(c.tmp / "whole.safetensors").read_bytes()
    return _saved(c, "truncated.safetensors", whole[: len(whole) // 2])


def _meta_model(c):
    with torch.device("meta"):
        return tiny_model("llama")


def _broken_qwen(c):
    """A model whose own forward fails: more key/value heads than heads."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from tiny_models import _COMMON

    config = Qwen2Config(**{**_COMMON, "num_key_value_heads": 8}, max_position_embeddings=64)
    return cu.load_model(AutoModelForCausalLM.from_config(config).eval(), tiny_tokenizer())


def _semeval_folder(c, name: str, forget: bytes):
    folder = c.tmp / name
    folder.mkdir(exist_ok=True)
    (folder / f"forget{'.parquet' if forget.startswith(b'PAR1') else '.jsonl'}").write_bytes(forget)
    (folder / "retain.jsonl").write_text('{"id": "r qa0", "input": "q", "output": "a", "task": "T"}\n')
    return cu.load_semeval(folder)


def _trace_with_metadata(c, metadata: str) -> str:
    from safetensors.torch import save_file

    path = c.tmp / f"metadata_{len(metadata)}.safetensors"
    save_file({"input_ids": torch.zeros(2, dtype=torch.long)}, str(path), metadata={"trace_result": metadata})
    return str(path)


def _retraced(c, **settings):
    from dataclasses import replace

    other = cu.trace(c.lm, PROMPT, SUBJECT, kinds=("mlp",), samples=2, window=3, progress=False)
    other.settings = replace(other.settings, **settings)
    return other


EFFECT = [0.7, 0.1, 0.05, 0.06, 0.08, 0.1, 0.3, 0.65]
NAN = float("nan")

CASES: list[tuple[str, Callable[[Context], Any], type[BaseException], str]] = [
    # ------------------------------------------------------------------ load_model
    ("load: a number", lambda c: cu.load_model(123), TypeError, r"cannot load a int; pass a built-in name"),
    ("load: a missing folder", lambda c: cu.load_model("./no/such/model"), FileNotFoundError, "no model folder at"),
    ("load: a folder without config", lambda c: cu.load_model(str(c.tmp)), FileNotFoundError, "has no config.json"),
    ("load: unknown dtype", lambda c: cu.load_model("olmo-tiny-bios", dtype="fp8"), ValueError, "unknown dtype 'fp8'"),
    ("load: integer dtype", lambda c: cu.load_model("olmo-tiny-bios", dtype=torch.int8), ValueError,
     "dtype must be a floating-point type"),
    ("load: unknown device", lambda c: cu.load_model("olmo-tiny-bios", device="tpu"), ValueError,
     "unknown device 'tpu'"),
    ("load: in-memory model, no tokenizer", lambda c: cu.load_model(tiny_model("llama")), ValueError,
     "needs its tokenizer"),
    ("load: tokenizer of the wrong type", lambda c: cu.load_model(tiny_model("llama"), 42), TypeError,
     "tokenizer must be a transformers tokenizer or a folder"),
    ("load: weights on the meta device", lambda c: cu.load_model(_meta_model(c), tiny_tokenizer()), ValueError,
     "on the meta device"),
    ("load: an unsupported architecture", lambda c: cu.get_architecture("mamba"), cu.UnsupportedArchitectureError,
     "'mamba' is not supported"),
    ("register: not a spec", lambda c: cu.register_architecture({"name": "x"}), TypeError,
     "register_architecture takes an ArchitectureSpec"),
    ("register: twice", lambda c: cu.register_architecture(cu.get_architecture("llama")), ValueError,
     "already registered"),
    ("load: a misspelt built-in name", lambda c: cu.load_model("olmo-tiny-bio"), ValueError,
     "did you mean 'olmo-tiny-bios'"),
    ("load: a model whose own forward fails", _broken_qwen, ValueError, "fails on a 6-token forward of its own"),
    # ------------------------------------------------------------------ trace: subject and prompt
    ("trace: subject not in prompt", _trace(subject="Anna"), ValueError, r"'Anna' does not occur in prompt"),
    ("trace: empty subject", _trace(subject=""), ValueError, "the subject is empty"),
    ("trace: subject with a trailing space", _trace(subject="Otto Russet "), ValueError,
     r"subject 'Otto Russet ' ends with whitespace"),
    ("trace: subject with a leading space", _trace(prompt="Ann says Otto Russet lives in", subject=" Otto Russet"),
     ValueError, "starts with whitespace"),
    ("trace: prompt not text", _trace(prompt=["Otto Russet lives in"]), TypeError, "prompt must be a string"),
    ("trace: subject not text", _trace(subject=3), TypeError, "subject must be a string"),
    ("trace: empty prompt", _trace(prompt=""), ValueError, "the prompt is empty"),
    ("trace: prompt longer than the context", _trace(prompt="word " * 600 + PROMPT), ValueError,
     "longer than the model's context of 512"),
    # ------------------------------------------------------------------ trace: answer and foil
    ("trace: empty answer", _trace(answer=""), ValueError, "the answer is an empty string"),
    ("trace: foil that is the answer", _trace(answer=" Houston", metric="logit_diff", foil=" Houston"), ValueError,
     "the answer's own token"),
    ("trace: token replacement by the same prompt", _trace(noise=TokenReplacement(PROMPT)), ValueError,
     "nothing is corrupted"),
    ("trace: remote on a local model", _trace(backend="nnsight", remote=True), ValueError,
     "runs models by their hub id"),
    ("trace: answer id too large", _trace(answer=10**9), ValueError, "outside the model's vocabulary"),
    ("trace: negative answer id", _trace(answer=-1), ValueError, "outside the model's vocabulary"),
    ("trace: numpy answer id too large", _trace(answer=np.int64(10**9)), ValueError, "outside the model's vocabulary"),
    ("trace: float answer", _trace(answer=3.5), TypeError, "answer must be text or a token id"),
    ("trace: tensor answer of many ids", _trace(answer=torch.tensor([1, 2])), TypeError,
     "answer must be text or a token id"),
    ("trace: answer that retokenizes the prompt", _trace(prompt="Otto Russet lives in Hou", answer="ston"), ValueError,
     "changes how the prompt tokenizes"),
    ("trace: empty foil", _trace(metric="logit_diff", foil=""), ValueError, "needs a foil"),
    ("trace: logit_diff without foil", _trace(metric="logit_diff"), ValueError, "needs a foil"),
    ("trace: boolean answer", _trace(answer=True), TypeError, "answer must be text or a token id"),
    # ------------------------------------------------------------------ trace: settings
    ("trace: unknown kind", _trace(kinds=("resid",)), ValueError, "unknown site"),
    ("trace: no kinds", _trace(kinds=()), ValueError, "no kinds"),
    ("trace: unknown metric", _trace(metric="accuracy"), ValueError, "unknown metric"),
    ("trace: unknown method", _trace(method="magic"), ValueError, "unknown method"),
    ("trace: zero samples", _trace(samples=0), ValueError, "samples must be an integer >= 1"),
    ("trace: fractional samples", _trace(samples=2.5), TypeError, "samples must be an integer >= 1"),
    ("trace: zero window", _trace(window=0), ValueError, "window must be an integer >= 1"),
    ("trace: float window", _trace(window=2.0), TypeError, "window must be an integer >= 1"),
    ("trace: zero max_batch_tokens", _trace(max_batch_tokens=0), ValueError, "max_batch_tokens must be an integer >= 1"),
    ("trace: negative top_predictions", _trace(top_predictions=-1), ValueError, "top_predictions must be an integer >= 0"),
    ("trace: top_predictions by attribution", _trace(top_predictions=3, method="attribution"), ValueError,
     "needs method='exact'"),
    ("trace: seed not an integer", _trace(seed="zero"), TypeError, "seed must be an integer"),
    # ------------------------------------------------------------------ trace: noise
    ("trace: unknown noise", _trace(noise="pink"), ValueError, "unknown noise"),
    ("trace: negative noise", _trace(noise=-1.0), ValueError, "noise scale must be a finite number >= 0"),
    ("trace: NaN noise", _trace(noise=NAN), ValueError, "noise scale must be a finite number >= 0"),
    ("trace: infinite noise", _trace(noise=math.inf), ValueError, "noise scale must be a finite number >= 0"),
    ("trace: NaN noise object", lambda c: GaussianNoise(NAN), ValueError, "noise scale must be a finite number"),
    ("trace: noise object with a bad rule", lambda c: GaussianNoise("s4"), ValueError, "noise scale must be 's3'"),
    ("trace: negative subject_std", _trace(subject_std=-1.0), ValueError, "subject_std must be a finite number > 0"),
    ("trace: NaN subject_std", _trace(subject_std=NAN), ValueError, "subject_std must be a finite number > 0"),
    ("trace: replacement of another length", _trace(noise=TokenReplacement("Otto lives in")), ValueError,
     "equal token length"),
    ("trace: corruption of the wrong shape", _trace(noise=lambda e, s: e[:, :1]), ValueError,
     "the corruption function returned shape"),
    ("trace: corruption that returns NaN", _trace(noise=lambda e, s: e * NAN), ValueError,
     "the corruption function returned NaN or infinite embeddings"),
    ("trace: a model that is not one", lambda c: cu.trace(42, PROMPT, SUBJECT), TypeError, "trace takes a LoadedModel, got a int"),
    # ------------------------------------------------------------------ trace_facts
    ("trace_facts: none", lambda c: cu.trace_facts(c.lm, []), ValueError, "no facts to trace"),
    ("trace_facts: a pair instead of a triple", lambda c: cu.trace_facts(c.lm, [(PROMPT, SUBJECT)]), TypeError,
     r"fact 0 is \('Otto Russet lives in', 'Otto Russet'\); facts are TraceFacts or \(prompt, subject, answer\)"),
    ("trace_facts: a string", lambda c: cu.trace_facts(c.lm, [PROMPT]), TypeError, "fact 0 is 'Otto Russet lives in'"),
    ("trace_facts: a bad fact among good ones",
     lambda c: cu.trace_facts(c.lm, [(PROMPT, SUBJECT, " Houston"), (PROMPT, "Anna", " Houston")], samples=1,
                              kinds=("mlp",), progress=False), ValueError, r"fact 1: subject 'Anna' does not occur"),
    # ------------------------------------------------------------------ TraceResult
    ("load trace: missing file", lambda c: cu.TraceResult.load(c.tmp / "nothing.safetensors"), FileNotFoundError,
     "no saved trace at"),
    ("load trace: not safetensors", lambda c: cu.TraceResult.load(_saved(c, "junk.safetensors", b"not a trace")),
     ValueError, "is not a saved TraceResult"),
    ("load trace: truncated file", lambda c: cu.TraceResult.load(_truncated_trace(c)), ValueError,
     "is not a saved TraceResult"),
    ("load trace: other safetensors", lambda c: cu.TraceResult.load(_other_safetensors(c)), ValueError,
     "no trace_result metadata"),
    ("trace result: unknown kind", lambda c: c.trace.indirect_effects("resid"), ValueError,
     r"no 'resid' scores in this trace; it has \['mlp'\]"),
    ("trace result: predictions not kept", lambda c: c.trace.predictions("mlp", 0, 0), ValueError,
     "kept no top predictions"),
    # ------------------------------------------------------------------ average_effects
    ("average: none", lambda c: cu.average_effects([]), ValueError, "no traces to average"),
    ("average: unknown value", lambda c: cu.average_effects([c.trace], value="ie"), ValueError, "unknown value"),
    ("average: not traces", lambda c: cu.average_effects(["a trace"]), TypeError,
     "average_effects takes TraceResults; item 0 is a str"),
    ("average: confidence out of range", lambda c: cu.average_effects([c.trace], confidence=95), ValueError,
     r"confidence must be between 0 and 1"),
    ("average: two models", lambda c: cu.average_effects([c.trace, _retraced(c, model="gpt2")]), ValueError,
     "the traces differ in model"),
    ("average: two metrics", lambda c: cu.average_effects([c.trace, _retraced(c, metric="logprob")]), ValueError,
     "the traces differ in metric"),
    # ------------------------------------------------------------------ localize
    ("localize: top_k and threshold", _localize(EFFECT, top_k=2, threshold=0.1), ValueError, "not both"),
    ("localize: top_k zero", _localize(EFFECT, top_k=0), ValueError, "between 1 and the number of layers"),
    ("localize: top_k too large", _localize(EFFECT, top_k=9), ValueError, "between 1 and the number of layers"),
    ("localize: fractional top_k", _localize(EFFECT, top_k=1.5), TypeError, "top_k must be an integer"),
    ("localize: unknown kind", _localize(EFFECT, kind="attn"), ValueError, "no 'attn' effects"),
    ("localize: unknown token group", _localize(EFFECT, token_group="subject"), ValueError, "unknown token group"),
    ("localize: unreachable threshold", _localize(EFFECT, threshold=2.0), ValueError, "no layer reaches"),
    ("localize: NaN threshold", _localize(EFFECT, threshold=NAN), ValueError, "threshold must be a finite number"),
    ("localize: no traces", lambda c: cu.localize([]), ValueError, "no traces given"),
    ("localize: all-zero effects", _localize([0.0] * 8), ValueError, "no layer has a positive mlp effect"),
    ("localize: NaN effects", _localize([NAN] * 8, token_group="last token"), ValueError, "are NaN or infinite"),
    ("localize: negative effects", _localize([-0.1] * 8, top_k=2), ValueError, "no layer has a positive"),
    # ------------------------------------------------------------------ select_parameters
    ("select: no layers", lambda c: cu.select_parameters(c.lm, []), ValueError, "no layers given"),
    ("select: layer out of range", lambda c: cu.select_parameters(c.lm, [12]), ValueError,
     r"layers \[12\] are out of range: this model has layers 0..7"),
    ("select: negative layer", lambda c: cu.select_parameters(c.lm, [-1]), ValueError, "out of range"),
    ("select: float layer", lambda c: cu.select_parameters(c.lm, [1.0]), TypeError,
     r"layers must be integers; got 1.0 \(float\)"),
    ("select: layers as a string", lambda c: cu.select_parameters(c.lm, "0,1"), TypeError,
     r"layers must be integers in a list, e.g. layers=\[0, 1\], got the string '0,1'"),
    ("select: a single int", lambda c: cu.select_parameters(c.lm, 3), TypeError, r"layers=\[3\]"),
    ("select: unknown modules", lambda c: cu.select_parameters(c.lm, [0], "ffn"), ValueError, "unknown modules 'ffn'"),
    # ------------------------------------------------------------------ unlearn
    ("unlearn: a model name", _unlearn(model="olmo-tiny-bios"), TypeError,
     "unlearn edits a loaded model in place; load it first"),
    ("unlearn: empty forget set", _unlearn(forget=[]), ValueError, "forget set is empty"),
    ("unlearn: empty retain set", _unlearn(retain=[]), ValueError, "retain set is empty"),
    ("unlearn: row missing a field", _unlearn(forget=[{"id": "x qa0", "input": "q", "task": "T"}]), ValueError,
     r"forget row 0 is missing field\(s\) \['output'\]"),
    ("unlearn: rows as strings", _unlearn(forget=["Otto Russet lives in Houston"]), TypeError,
     "forget row 0 is a str; rows are causal_unlearn.Row"),
    ("unlearn: empty output", _unlearn(forget=[cu.Row("x qa0", "q", " ", "T")]), ValueError, "empty output"),
    ("unlearn: a row id evaluate cannot score", _unlearn(forget=[cu.Row("row-1", "q", "a", "T")]), ValueError,
     r"forget row 0: row id 'row-1' does not end with 'sc<N>' or 'qa<N>'"),
    ("unlearn: no layers", _unlearn(layers=[]), ValueError, "no layers given"),
    ("unlearn: layer out of range", _unlearn(layers=[8]), ValueError, "out of range"),
    ("unlearn: selection without evaluations", _unlearn(eval_every=None), ValueError, "needs evaluations"),
    ("unlearn: zero epochs", _unlearn(epochs=0), ValueError, "epochs must be a positive integer"),
    ("unlearn: zero batch size", _unlearn(batch_size=0), ValueError, "batch_size must be a positive integer"),
    ("unlearn: zero accumulation", _unlearn(grad_accum=0), ValueError, "grad_accum must be a positive integer"),
    ("unlearn: zero eval_every", _unlearn(eval_every=0), ValueError, "eval_every must be a positive integer"),
    ("unlearn: unknown loss_on", _unlearn(loss_on="prompt"), ValueError, "unknown loss_on"),
    ("unlearn: unknown select", _unlearn(select="best"), ValueError, "unknown select"),
    ("unlearn: unknown objective", _unlearn(objective="forget_harder"), ValueError, "unknown objective"),
    ("unlearn: negative lr", _unlearn(lr=-1e-3), ValueError, "lr must be a finite number > 0"),
    ("unlearn: NaN lr", _unlearn(lr=NAN), ValueError, "lr must be a finite number > 0"),
    ("unlearn: negative weight decay", _unlearn(weight_decay=-0.1), ValueError,
     "weight_decay must be a finite number >= 0"),
    ("unlearn: zero max_length", _unlearn(max_length=0), ValueError, "max_length must be a positive integer or None"),
    ("unlearn: a callback that is a function", _unlearn(callbacks=[print]), TypeError,
     "callbacks must be UnlearnCallback instances"),
    ("unlearn: unknown modules", _unlearn(modules="ffn"), ValueError, "unknown modules"),
    # ------------------------------------------------------------------ evaluate
    ("evaluate: a model name", _evaluate(model="olmo-tiny-bios"), TypeError, "evaluate takes a LoadedModel"),
    ("evaluate: empty forget set", _evaluate(forget=[]), ValueError, "forget set is empty"),
    ("evaluate: empty retain set", _evaluate(retain=[]), ValueError, "retain set is empty"),
    ("evaluate: dict rows", _evaluate(forget=[{"id": "a qa0"}]), TypeError, "must hold causal_unlearn.Row"),
    ("evaluate: members without nonmembers", lambda c: _evaluate(members=c.world.forget[:2])(c), ValueError,
     "needs both members and nonmembers"),
    ("evaluate: empty members", lambda c: _evaluate(members=[], nonmembers=c.world.holdout[:2])(c), ValueError,
     "needs members and non-members"),
    ("evaluate: empty utility rows", _evaluate(utility=[]), ValueError, "utility rows are empty"),
    ("evaluate: zero new tokens", lambda c: cu.evaluate(c.lm, c.world.forget[:2], c.world.retain[:2], max_new_tokens=0,
                                                        progress=False), ValueError,
     "max_new_tokens must be an integer >= 1"),
    ("generate: no prompts", lambda c: cu.greedy_generate(c.lm, []), ValueError,
     "no prompts to generate from"),
    ("generate: a string instead of a list", lambda c: cu.greedy_generate(c.lm, "Paris is"),
     TypeError, "prompts must be a list of strings"),
    ("trace: a model name", lambda c: cu.trace("olmo-tiny-bios", "Otto Russet lives in", "Otto Russet"), TypeError,
     r"trace takes a LoadedModel, got a str; load it with causal_unlearn.load_model"),
    ("likelihood: a transformers model", lambda c: cu.evaluation.mean_token_nll(c.lm.model, ["Paris"]), TypeError,
     r"mean_token_nll takes a LoadedModel"),
    ("generate: a transformers model", lambda c: cu.greedy_generate(c.lm.model, ["Paris is"]), TypeError,
     r"greedy_generate takes a LoadedModel, got a OlmoForCausalLM.*load_model\(model, tokenizer\)"),
    # ------------------------------------------------------------------ data
    ("world: unknown split", lambda c: c.world.facts_to_trace(split="test"), ValueError, "unknown split 'test'"),
    ("world: unknown attribute", lambda c: c.world.facts_to_trace(attribute="shoe size"), ValueError,
     "unknown attribute 'shoe size'"),
    ("world: negative size", lambda c: cu.make_bios_world(n_forget=-1), ValueError, "need non-negative split sizes"),
    ("semeval: missing folder", lambda c: cu.load_semeval(c.tmp / "no_such_data"), FileNotFoundError, "no_such_data"),
    ("semeval: an empty forget file", lambda c: _semeval_folder(c, "empty", b""), ValueError,
     "the forget split has no rows"),
    ("semeval: a binary jsonl", lambda c: _semeval_folder(c, "binary", b"\x89PNG\xff\xfe"), ValueError, "not UTF-8 text"),
    ("semeval: a corrupt parquet", lambda c: _semeval_folder(c, "parquet", b"PAR1 not really"), ValueError,
     "not a readable Parquet file"),
    ("trace result: metadata that is not JSON", lambda c: cu.TraceResult.load(_trace_with_metadata(c, "{oops")),
     ValueError, "its trace_result metadata is not what TraceResult.save writes"),
    ("trace result: metadata without settings", lambda c: cu.TraceResult.load(_trace_with_metadata(c, "{}")),
     ValueError, "its trace_result metadata is not what TraceResult.save writes"),
    # ------------------------------------------------------------------ audit
    ("audit: unknown check", lambda c: cu.AuditConfig(checks=("vibes",)), ValueError, "unknown audit check"),
    ("audit: zero probes per form", lambda c: cu.AuditConfig(probes_per_form=0), ValueError,
     "probes_per_form must be a positive integer"),
    ("audit: the same model twice", lambda c: cu.audit(c.lm, c.lm, c.world.unlearning_task()), ValueError,
     "the same object"),
    ("audit: a model name", lambda c: cu.audit("olmo-tiny-bios", c.lm, c.world.unlearning_task()), TypeError,
     "audit takes two LoadedModels"),
    ("audit: negative relearning steps", lambda c: cu.RelearnBudget(steps=-1), ValueError,
     "needs at least one step, got steps=-1"),
]


def _other_safetensors(c) -> str:
    from safetensors.torch import save_file

    path = c.tmp / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    return str(path)


@pytest.mark.parametrize("call, error, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_gets_a_clear_error(ctx, call, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=message) as caught:
            call(ctx)
    # the error is raised by the library, not from inside torch or transformers
    origin = caught.traceback[-1].path
    assert "site-packages" not in str(origin), f"raised from {origin}"


def test_there_are_at_least_a_hundred_cases():
    assert len(CASES) >= 100 and len({case[0] for case in CASES}) == len(CASES)


def test_the_shared_model_was_never_edited(ctx, builtin):
    assert all(torch.equal(p, q) for p, q in zip(ctx.lm.model.parameters(), builtin.model.parameters()))


# ---------------------------------------------------------------------- inputs that must simply work


def test_numpy_integers_work_wherever_integers_do(ctx):
    lm = ctx.lm
    by_int = cu.trace(lm, PROMPT, SUBJECT, answer=lm.to_tokens(" Houston")[0, -1].item(), kinds=("mlp",), samples=2,
                      window=3, progress=False)
    by_numpy = cu.trace(lm, PROMPT, SUBJECT, answer=np.int64(by_int.answer_id), kinds=("mlp",), samples=np.int64(2),
                        window=np.int32(3), progress=False)
    torch.testing.assert_close(by_numpy.scores["mlp"], by_int.scores["mlp"], rtol=0, atol=0)
    assert cu.select_parameters(lm, np.array([1, 0])).layers == [0, 1]
    assert cu.select_parameters(lm, [np.int64(2)]).names == cu.select_parameters(lm, [2]).names
    assert cu.select_parameters(lm, torch.tensor([3])).layers == [3]


def test_a_subject_that_occurs_twice_says_which_occurrence_is_corrupted(ctx):
    prompt = "Otto Russet met Otto Russet in"
    with pytest.warns(UserWarning, match=r"'Otto Russet' occurs 2 times in the prompt; the first \(tokens 1-3: "
                                         r"'Otto', ' Russet'\) is corrupted"):
        result = cu.trace(ctx.lm, prompt, SUBJECT, kinds=("mlp",), samples=1, window=3, progress=False)
    assert result.subject_range == (1, 3)


# ---------------------------------------------------------------------- probably not what was meant: a warning


def test_an_answer_without_its_space_warns_with_the_spelling_meant(ctx):
    with pytest.warns(cu.tracing.tokens.AnswerSpacingWarning, match=r"did you mean ' Houston'"):
        result = cu.trace(ctx.lm, PROMPT, SUBJECT, answer="Houston", kinds=("hidden",), samples=1, progress=False)
    assert result.answer == "H" and not result.known


def test_a_fact_the_model_does_not_know_says_so(ctx, world):
    with pytest.warns(cu.tracing.tokens.UnknownFactWarning, match=r"its top-1 is ' Houston', not the answer ' Boston'"):
        cu.trace(ctx.lm, PROMPT, SUBJECT, answer=" Boston", kinds=("hidden",), samples=1, progress=False)
    facts = [(PROMPT, SUBJECT, " Boston"), (PROMPT, SUBJECT, " Houston")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cu.trace_facts(ctx.lm, facts, kinds=("hidden",), samples=1, progress=False)
    unknown = [w for w in caught if issubclass(w.category, cu.tracing.tokens.UnknownFactWarning)]
    assert len(unknown) == 1 and "1 of 2 facts are not known" in str(unknown[0].message)


# ---------------------------------------------------------------------- fast failures, a clean command line


def test_an_unreachable_hub_fails_without_retrying(ctx, monkeypatch):
    import time

    def no_waiting(seconds):
        raise AssertionError(f"load_model waited {seconds} s to retry the hub")

    monkeypatch.setattr(time, "sleep", no_waiting)
    for name in ("gpt2", "no-such-org/no-such-model"):
        with pytest.raises(OSError, match=f"could not load '{name}'.*hub access"):
            cu.load_model(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_refused_clearly():
    with pytest.raises(ValueError, match=r"device='cuda', but .* use device='cpu'"):
        cu.load_model("olmo-tiny-bios", device="cuda")


def test_the_command_line_prints_one_error_line_and_exits_2(capsys):
    from causal_unlearn.cli import main

    assert main(["trace", "--prompt", PROMPT, "--subject", "Anna", "--samples", "1"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # beside transformers' loading bar
    assert len(errors) == 1 and errors[0].startswith("error: subject 'Anna' does not occur in prompt")
    assert "Traceback" not in err
    with pytest.raises(ValueError, match="does not occur"):
        main(["trace", "--prompt", PROMPT, "--subject", "Anna", "--samples", "1", "--debug"])


def test_the_command_line_help_loads_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = ("import sys\nfrom causal_unlearn.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['trace', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted({'torch', 'transformers', 'plotly'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_reprs_are_one_line_and_say_what_matters(ctx):
    text = repr(ctx.trace)
    assert "\n" not in text and len(text) < 300 and "' Houston'" in text and "(5, 8)" in text
    effects = repr(cu.average_effects([ctx.trace, ctx.trace]))
    assert "\n" not in effects and "up to 2 facts" in effects and "(7, 8)" in effects


def test_an_edit_that_blows_the_weights_up_warns(ctx):
    lm = ctx.lm.copy()
    with pytest.warns(UserWarning, match=r"moved .* times its own size: the model is almost surely broken \(lr=1e\+30\)"):
        # one optimizer step: the weights end finite but huge (a second step would diverge, which raises)
        result = cu.unlearn(lm, ctx.world.forget[:2], ctx.world.retain[:2], layers=[0], objective="grad_diff", epochs=1,
                            lr=1e30, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
    result.revert()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an ordinary edit says nothing
        cu.unlearn(lm, ctx.world.forget[:4], ctx.world.retain[:4], layers=[0], objective="grad_diff", epochs=1,
                   lr=1e-4, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False).revert()


def test_a_run_that_forgets_nothing_warns(ctx):
    """The paper's recipe (lr 1.5e-5, 120 rows a step) on five rows: a few steps too small to change
    any answer. An edit that does forget says nothing."""
    lm = ctx.lm.copy()
    paper = dict(lr=1.5e-5, batch_size=12, grad_accum=10, eval_every=2, select="lowest_joint_loss")
    with pytest.warns(UserWarning, match=r"after \d+ optimizer step\(s\) the model still gives every forget answer"):
        cu.unlearn(lm, ctx.world.forget[:5], ctx.world.retain[:5], layers=[7], epochs=2, progress=False,
                   **paper).revert()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = cu.unlearn(lm, ctx.world.forget[:4], ctx.world.retain[:4], layers=[0, 1], objective="grad_diff",
                            epochs=4, lr=2e-3, batch_size=4, grad_accum=1, eval_every=2, select="last", progress=False)
    assert result.evaluations[-1]["forget_answer_accuracy"] < result.evaluations[0]["forget_answer_accuracy"]
    result.revert()
