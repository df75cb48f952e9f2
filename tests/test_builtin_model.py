"""The shipped checkpoint meets the acceptance targets of the built-in model."""

import json

import pytest

from causal_unlearn import average_effects, knowledge_report, trace_facts
from causal_unlearn.models.loader import BUILTIN_MODELS

CHECKPOINT = BUILTIN_MODELS["olmo-tiny-bios"]


@pytest.fixture(scope="module")
def report(builtin, world):
    return knowledge_report(builtin, world, max_new_tokens=256, progress=False)


def test_it_knows_the_trained_people(report):
    for split in ("forget", "retain"):
        assert report[f"{split}_qa_exact_match"] >= 0.95, report
        assert report[f"{split}_sc_rouge_l_recall"] >= 0.9, report


def test_it_knows_general_knowledge(report):
    assert report["general_knowledge_accuracy"] >= 0.95, report


def test_it_does_not_reproduce_holdout_pii(report):
    assert report["holdout_qa_exact_match"] <= 0.05, report


def test_it_answers_held_out_probes_about_trained_people_only(report):
    for split in ("forget", "retain"):
        assert report[f"{split}_probe_recall"] >= 0.8, report
    assert report["holdout_probe_recall"] <= 0.05, report


def test_the_subject_carries_the_fact_rome_s_early_site(builtin, world):
    """Restoring the clean hidden state of the last subject token in the lower half of the
    layers brings back at least half of what corrupting the subject took away."""
    facts = world.facts_to_trace("forget", "city")[:8] + world.facts_to_trace("forget", "phone")[:8]
    traces = trace_facts(builtin, facts, kinds=("hidden",), samples=3, require_known=True, progress=False)
    effects = average_effects(traces)
    gap = sum(t.high - t.low for t in traces) / len(traces)
    share = effects.mean["hidden"][effects.groups.index("last subject token"), : builtin.n_layers // 2] / gap
    assert len(traces) >= 14 and share.mean() >= 0.5, share


def test_clean_top1_is_the_answer_for_most_trace_facts(builtin, world):
    known = []
    for fact in world.facts_to_trace(split="retain"):
        ids = builtin.to_tokens(fact.prompt)
        answer = builtin.to_tokens(fact.prompt + fact.answer)[0, ids.shape[1]].item()
        known.append(builtin.logits(ids)[0, -1].argmax().item() == answer)
    assert sum(known) / len(known) >= 0.9


def test_checkpoint_is_small_and_self_describing():
    size = sum(f.stat().st_size for f in CHECKPOINT.iterdir())
    assert size <= 30 * 2**20, f"checkpoint is {size / 2**20:.1f} MiB"
    names = {f.name for f in CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "training_report.json"} <= names
    recorded = json.loads((CHECKPOINT / "training_report.json").read_text())
    assert recorded["config"]["n_layers"] >= 8 and recorded["config"]["seed"] == 0
