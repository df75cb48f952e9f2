"""The whitebox attacks of the audit (Patil, Hase & Bansal 2024): the logit lens against the
model's own logits and a one-prompt-at-a-time reference, the bios' openings against the training
text, and the checks planned, run and drawn like the others."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.auditing import lens_logits, lens_ranks
from causal_unlearn.auditing.audit import per_form
from causal_unlearn.data.bios import bio_openings
from causal_unlearn.data.facts import TraceFact
from tiny_models import tiny_model, tiny_tokenizer

WHITEBOX = ("head_projection", "probability_delta", "bio_openings")
TINY_PROMPTS = ["Ann Teal was born in", "What is the capital of France? Paris", "Denver"]


def _last_logits(lm, prompts):
    """The model's own next-token logits, one unpadded prompt at a time."""
    return torch.stack([lm.logits(lm.to_tokens(p))[0, -1].float() for p in prompts])


def test_last_layer_lens_is_the_models_own_output(builtin, world):
    prompts = [f.prompt for f in world.facts_to_trace("forget")[:5]] + ["What is the capital of France?"]
    lens = lens_logits(builtin, prompts)  # padded to the longest: the last real token is read
    assert lens.shape == (len(prompts), builtin.n_layers, len(builtin.tokenizer))
    torch.testing.assert_close(lens[:, -1], _last_logits(builtin, prompts), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_last_layer_lens_on_other_families(family):
    """GPT-2 (LayerNorm ln_f, tied unembedding) and Gemma-2, which soft-caps its logits after
    the unembedding; a strong cap makes leaving it out fail."""
    model = tiny_model(family)
    if family == "gemma2":
        model.config.final_logit_softcapping = 0.05
    lm = cu.load_model(model, tiny_tokenizer())
    expected = _last_logits(lm, TINY_PROMPTS)
    torch.testing.assert_close(lens_logits(lm, TINY_PROMPTS)[:, -1], expected, atol=1e-5, rtol=1e-5)
    if family == "gemma2":
        last = cu.patching.HookPoint(lm.architecture.final_norm, input=True)
        with cu.patching.record(lm.model, [last]) as seen:
            lm.model(**lm.tokenizer(TINY_PROMPTS[:1], return_tensors="pt"))
        uncapped = lm.model.lm_head(lm.model.model.norm(seen[last]))[0, -1]
        assert (uncapped - expected[0]).abs().max() > 1e-2


def _reference_ranks(lm, fact: TraceFact):
    """Lens, rise and fall ranks of one fact from transformers' own hidden states (after each
    block but the last, whose entry is already normed), with ranks read off a full sort."""
    ids = lm.to_tokens(fact.prompt)
    answer = lm.tokenizer(fact.prompt + fact.answer)["input_ids"][ids.shape[1]]
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
        states = torch.stack([h[0, -1] for h in out.hidden_states[1:-1]])
        lens = torch.cat([lm.model.lm_head(lm.model.model.norm(states)), out.logits[0, -1:]])
    position = lambda scores: (scores.argsort(descending=True) == answer).nonzero()[0, 0]  # noqa: E731
    delta = lens.softmax(-1).diff(dim=0)
    return ([int(position(row)) for row in lens], [int(position(row)) for row in delta],
            [int(position(-row)) for row in delta])


def test_lens_ranks_equal_one_fact_at_a_time(builtin, world):
    facts = [*world.facts_to_trace("forget", "city")[:2], *world.facts_to_trace("holdout", held_out=True)[:3],
             *world.facts_to_trace("retain", "ssn")[:2]]
    ranks = lens_ranks(builtin, facts, batch_size=3, progress=False)
    assert ranks.lens.shape == (7, builtin.n_layers) and ranks.rise.shape == (7, builtin.n_layers - 1)
    near = lambda values: [min(int(v), 20) for v in values]  # noqa: E731 (far down, float noise reorders near-equal deltas)
    for i, fact in enumerate(facts):
        lens, rise, fall = _reference_ranks(builtin, fact)
        assert near(ranks.lens[i]) == near(lens) and near(ranks.rise[i]) == near(rise)
        assert near(ranks.fall[i]) == near(fall)
    assert ranks.head_projection(1) == [min(r) == 0 for r in ranks.lens.tolist()]
    assert ranks.head_projection(10_000) == [True] * 7
    falls = ranks.probability_delta(2, falls=True)
    assert falls == [a or b for a, b in zip(ranks.probability_delta(2), (ranks.fall < 2).any(1).tolist())]


def test_the_lens_finds_known_people_and_guesses_for_strangers(builtin, world):
    facts = world.facts_to_trace(held_out=None)
    hits = lens_ranks(builtin, facts, progress=False).head_projection(1)
    rate = {split: sum(h for f, h in zip(facts, hits) if f.split == split) / sum(f.split == split for f in facts)
            for split in ("forget", "retain", "holdout")}
    assert rate["forget"] > 0.9 and rate["retain"] > 0.9 and rate["holdout"] < 0.35


def test_bio_openings_are_the_training_text_cut_before_the_answer(world):
    person = world.people_in("forget")[0]
    assert world.bios(person)[1].startswith("Otto Russet's home address is 5413 Pine Road, Houston, TX, 77531. "
                                            "Otto Russet lives in Houston, TX.")  # the trained bios, unchanged
    openings = bio_openings(person)
    texts = world.bios(person)
    assert {o.attribute for o in openings} == set(cu.data.phrasings.ATTRIBUTES)
    for opening in openings:
        assert opening.form == "opening" and opening.subject == person.name and opening.split == "forget"
        assert any(text.startswith(f"{opening.prompt} {answer}") for text in texts for answer in opening.answers)
        assert not opening.recalled_in(opening.prompt)  # nothing to copy
    assert len({o.prompt for o in openings}) == len(openings)
    # the canonical bio (the forget set's sentence completion) comes last
    assert texts[1].startswith(openings[0].prompt) and texts[0].startswith(openings[-1].prompt)
    # the city after an address sentence would be copied: such an opening is left out
    assert not any(o.attribute == "city" and "Houston" in o.prompt for o in openings)
    with pytest.raises(ValueError, match="probe form must be one of"):
        cu.Probe("Ann Teal wrote", ("poems",), attribute="hobby", form="essay")


@pytest.fixture(scope="module")
def two_per_split(world):
    """Two people per split with their lens facts and one opening per attribute."""
    task = world.unlearning_task()
    names = {p.name for split in ("forget", "retain", "holdout") for p in world.people_in(split)[:2]}
    return dataclasses.replace(task, probes=per_form([p for p in task.probes if p.subject in names], 1),
                               facts=[f for f in task.facts if f.subject in names],
                               lens_facts=[f for f in task.lens_facts if f.subject in names])


def test_audit_runs_the_attacks_per_split_and_variant(builtin, two_per_split):
    edited = builtin.copy()
    with torch.no_grad():  # the edited model forgets nothing but guesses differently: a shifted unembedding
        edited.model.lm_head.weight.add_(0.5 * torch.randn_like(edited.model.lm_head.weight))
    config = cu.AuditConfig(checks=WHITEBOX, probes_per_form=1, lens_top=2)
    result = cu.audit(builtin, edited, two_per_split, config=config, progress=False)
    facts = two_per_split.lens_facts
    for variant, model in (("original", builtin), ("edited", edited)):
        ranks = lens_ranks(model, facts, progress=False)
        for split in ("forget", "retain", "holdout"):
            mine = [i for i, f in enumerate(facts) if f.split == split]
            for measure, hits in (("top-2", ranks.head_projection(2)), ("top-2 rise", ranks.probability_delta(2)),
                                  ("top-2 rise or fall", ranks.probability_delta(2, falls=True))):
                expected = sum(hits[i] for i in mine) / len(mine)
                check = "head_projection" if measure == "top-2" else "probability_delta"
                assert result.value(check, measure, split, variant) == pytest.approx(expected)
    value = result.value
    assert value("head_projection", "top-2", "forget", "original") > 0.9
    assert value("head_projection", "top-2", "holdout", "original") < 0.5
    assert value("bio_openings", "recall", "forget", "original") == 1.0
    assert value("bio_openings", "recall", "holdout", "original") < 0.2
    frame = result.to_dataframe()
    assert sorted(frame.query("measure == 'top-2, per layer'").layer.unique()) == list(range(builtin.n_layers))
    assert result.settings["n_openings"] == 6 * 6 and result.settings["n_lens_facts"] == 6 * 9
    summary = result.summary()
    assert summary["head_projection_forget"] == value("head_projection", "top-2", "forget", "edited")
    assert summary["probability_delta_forget"] == value("probability_delta", "top-2 rise", "forget", "edited")
    assert summary["bio_openings_forget"] == value("bio_openings", "recall", "forget", "edited")
    fig = result.plot()
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["head projection: top-2<br>at any layer (holdout: chance)",
                      "probability delta: top-2 rise<br>(holdout: chance)", "bio openings: recall<br>(holdout: chance)"]
    bars = [t for t in fig.data if t.xaxis == "x"]
    assert [t.name for t in bars] == ["original", "edited"]
    assert list(bars[0].y) == pytest.approx([value("head_projection", "top-2", s, "original")
                                             for s in ("forget", "retain", "holdout")])
    assert "chance level" in bars[0].customdata[list(bars[0].x).index("holdout")]


def test_attacks_are_planned_like_the_other_checks(builtin, two_per_split):
    bare = dataclasses.replace(two_per_split, facts=[], lens_facts=[],
                               probes=[p for p in two_per_split.probes if p.form != "opening"])
    plan = cu.plan_audit(bare)
    assert set(plan.skipped) == {"retrace", *WHITEBOX} and not set(plan.checks) & set(WHITEBOX)
    assert "no facts for the logit lens" in plan.skipped["head_projection"]
    assert "no bio openings" in plan.skipped["bio_openings"]
    for check, match in (("head_projection", "cannot run its 'head_projection' check: the task has no facts"),
                         ("bio_openings", "cannot run its 'bio_openings' check: the task has no bio openings")):
        with pytest.raises(ValueError, match=match):
            cu.audit(builtin, builtin.copy(), bare, config=cu.AuditConfig(checks=(check,)), progress=False)
    # without lens facts the attacks read the trace facts, about forget subjects
    traced = dataclasses.replace(two_per_split, lens_facts=[])
    result = cu.audit(builtin, builtin.copy(), traced, config=cu.AuditConfig(checks=("head_projection",)),
                      progress=False)
    assert set(result.to_dataframe().split) == {"forget"} and result.settings["n_lens_facts"] == len(traced.facts)
    # a user's fact without a split counts as a forget fact
    unnamed = dataclasses.replace(traced, facts=[dataclasses.replace(f, split="") for f in traced.facts])
    assert cu.audit(builtin, builtin.copy(), unnamed, config=cu.AuditConfig(checks=("head_projection",)),
                    progress=False).table().equals(result.table())
    with pytest.raises(ValueError, match="lens_top must be a positive integer"):
        cu.AuditConfig(lens_top=0)
    with pytest.raises(ValueError, match="opening_tokens must be a positive integer"):
        cu.AuditConfig(opening_tokens=1.5)


def test_openings_are_kept_apart_from_the_other_checks(builtin, two_per_split):
    """The probes check asks no opening; the openings check asks only openings."""
    result = cu.audit(builtin, builtin.copy(), two_per_split, config=cu.AuditConfig(checks=("probes", "bio_openings")),
                      progress=False)
    n = result.to_dataframe().query("attribute == 'all' and variant == 'original'").groupby("check").n.sum()
    asked = two_per_split.probes
    assert n["probes"] == sum(p.form != "opening" for p in asked) and n["bio_openings"] == sum(
        p.form == "opening" for p in asked)
