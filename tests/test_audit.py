"""The audit: each check against an independent computation, the user's models left untouched,
and a specific error for each bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.auditing import (
    RelearnBudget, answer_pool, choice_ranks, decoding_accuracy, int8_dynamic, relearned, round_trip, subject_states,
)
from causal_unlearn.auditing.audit import per_form
from causal_unlearn.auditing.probing import choices
from causal_unlearn.data.bios import UnlearningTask
from causal_unlearn.data.rows import Row
from tiny_models import tiny_model, tiny_tokenizer


def _state(lm):
    return {name: p.detach().clone() for name, p in lm.model.named_parameters()}


def _same(lm, state) -> bool:
    return all(torch.equal(p, state[name]) for name, p in lm.model.named_parameters())


@pytest.fixture(scope="module")
def small_task(world):
    """Four people per split of the built-in world (the model knows forget and retain people)."""
    people = {split: {p.name for p in world.people_in(split)[:4]} for split in ("forget", "retain", "holdout")}
    names = set().union(*people.values())
    task = world.unlearning_task()
    about = lambda rows, split: [r for r in rows if any(n in r.text for n in people[split])]  # noqa: E731
    return UnlearningTask(
        forget=about(task.forget, "forget"), retain=about(task.retain, "retain") + world.general_knowledge[:6],
        members=about(task.members, "forget"), nonmembers=about(task.nonmembers, "holdout"),
        utility=task.utility[:6], probes=[p for p in task.probes if p.subject in names and p.form != "opening"]
        + per_form([p for p in task.probes if p.subject in names and p.form == "opening"], 1),
        labels={n: task.labels[n] for n in names}, facts=[f for f in task.facts if f.subject in people["forget"]][:6])


def _naive_mean_logprob(lm, prompt: str, answer: str) -> float:
    """log p(answer tokens | prompt) per token, one sequence at a time, from the full logits."""
    ids = lm.tokenizer(prompt + " " + answer)["input_ids"]
    n_prompt = len(lm.tokenizer(prompt)["input_ids"])
    logprobs = lm.logits(torch.tensor([ids]))[0].log_softmax(-1)
    return sum(float(logprobs[t - 1, ids[t]]) for t in range(n_prompt, len(ids))) / (len(ids) - n_prompt)


def test_choice_ranks_equal_one_sequence_at_a_time(builtin, world):
    probes = world.probes("forget", attribute="city")[:3] + world.probes("holdout", attribute="birth_date")[:2]
    pool = answer_pool(world.probes())
    ranks = choice_ranks(builtin, probes, pool=pool, n_choices=5, progress=False, batch_size=7)
    for probe, (rank, n) in zip(probes, ranks):
        options = choices(probe, pool, 5)
        scores = [max(_naive_mean_logprob(builtin, probe.prompt, form) for form in answers) for answers in options]
        assert n == 5 and rank == sum(s > scores[0] for s in scores[1:])


def test_choice_ranks_tell_known_from_unknown_people(builtin, world):
    pool = answer_pool(world.probes())
    known = [p for p in world.probes("retain") if p.form == "question"][:60]
    strangers = [p for p in world.probes("holdout") if p.form == "question"][:60]
    top1 = lambda probes: sum(r == 0 for r, _ in choice_ranks(builtin, probes, pool=pool, progress=False)) / len(probes)  # noqa: E731
    assert top1(known) > 0.9 and top1(strangers) < 0.3


def test_choices_are_deterministic_and_distinct(world):
    pool = answer_pool(world.probes())
    probe = world.probes("forget", attribute="ssn")[0]
    first, again = choices(probe, pool, 10, seed=3), choices(probe, pool, 10, seed=3)
    assert first == again and first[0] == probe.answers and len({a[0] for a in first}) == 10
    with pytest.raises(ValueError, match="n_choices must be at least 2"):
        choice_ranks(None, [probe], pool=pool, n_choices=1)


def test_relearned_trains_then_restores_bit_for_bit(builtin, world):
    before = _state(builtin)
    rows = world.retain[:24]
    with relearned(builtin, rows, RelearnBudget(steps=3, lr=1e-3), progress=False) as tuned:
        assert not _same(tuned, before)
    assert _same(builtin, before) and not builtin.model.training
    with pytest.raises(KeyboardInterrupt), relearned(builtin, rows, RelearnBudget(steps=2), progress=False):
        raise KeyboardInterrupt  # an interrupt inside the block still restores
    assert _same(builtin, before) and all(p.grad is None for p in builtin.model.parameters())


def test_relearned_interrupted_while_it_trains_restores_bit_for_bit(builtin, world):
    class InterruptAfter(list):  # the rows, interrupted at the third batch's draw
        reads = 0

        def __getitem__(self, index):
            InterruptAfter.reads += 1
            if InterruptAfter.reads > 8:
                raise KeyboardInterrupt
            return super().__getitem__(index)

    before, flags = _state(builtin), {n: p.requires_grad for n, p in builtin.model.named_parameters()}
    with pytest.raises(KeyboardInterrupt), relearned(builtin, InterruptAfter(world.retain[:24]),
                                                     RelearnBudget(steps=5, lr=1e-2, batch_size=4), progress=False):
        pass
    assert InterruptAfter.reads == 9  # two steps trained before the interrupt
    assert _same(builtin, before) and flags == {n: p.requires_grad for n, p in builtin.model.named_parameters()}
    assert all(p.grad is None for p in builtin.model.parameters()) and not builtin.model.training


def test_relearning_brings_back_what_grad_ascent_hid(builtin, world):
    """A suppressed fact returns when the model is fine-tuned on the person's other facts."""
    person = world.people_in("forget")[0]
    rows = [r for r in world.forget if person.name in r.text]
    edited = builtin.copy()
    cu.unlearn(edited, rows[1:2], world.retain[:12], layers=[0, 1, 2, 3, 4, 5, 6, 7], objective="grad_ascent", epochs=3,
               lr=3e-3, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
    qa = rows[1]
    nll = lambda lm: float(cu.evaluation.likelihood.mean_token_nll(lm, [qa.text], progress=False))  # noqa: E731
    hidden = nll(edited)
    with relearned(edited, [r for r in rows if r is not qa], RelearnBudget(steps=10, lr=1e-3), progress=False) as tuned:
        relearned_nll = nll(tuned)
    assert hidden > nll(builtin) + 1 and relearned_nll < hidden - 0.5


def test_relearn_budget_errors():
    with pytest.raises(ValueError, match="at least one step"):
        RelearnBudget(steps=0)
    with pytest.raises(ValueError, match="learning rate must be positive"):
        RelearnBudget(lr=0.0)
    with pytest.raises(ValueError, match="needs rows"), relearned(None, [], RelearnBudget()):
        pass


def test_int8_and_bf16_copies_leave_the_model_alone(builtin, world):
    before = _state(builtin)
    quantized, rounded = int8_dynamic(builtin), round_trip(builtin)
    assert _same(builtin, before)
    weight = builtin.model.lm_head.weight
    assert torch.equal(rounded.model.lm_head.weight, weight.to(torch.bfloat16).float())
    assert "quantized" in type(quantized.model.model.layers[0].mlp.down_proj).__module__
    # int8 changes the logits a little and keeps the model working
    ids = builtin.to_tokens("What is the capital of France?")
    difference = (quantized.logits(ids) - builtin.logits(ids)).abs().max()
    assert 0 < difference < 1.5
    assert cu.greedy_generate(quantized, ["What is the capital of France?"],
                              max_new_tokens=3) == [" Paris"]
    with pytest.raises(ValueError, match="floating dtype"):
        round_trip(builtin, torch.int8)


def test_subject_states_equal_one_prompt_at_a_time(builtin, world):
    probes = world.probes("retain")[:5] + world.probes("general_knowledge")[:2]
    states = subject_states(builtin, probes, batch_size=3, progress=False)
    for probe, got in zip(probes, states):
        ids = builtin.to_tokens(probe.prompt)
        end = cu.tracing.tokens.subject_token_range(builtin, probe.prompt, probe.subject)[1]
        # transformers' hidden states after each block but the last, whose entry is after the final
        # norm; the last block's output is what that norm reads
        norm_input = cu.patching.HookPoint("model.norm", input=True)
        with cu.patching.record(builtin.model, [norm_input]) as final:
            hidden = builtin.model(input_ids=ids, output_hidden_states=True).hidden_states
        expected = [h[0, end - 1] for h in hidden[1:-1]] + [final[norm_input][0, end - 1]]
        assert torch.allclose(got, torch.stack(expected), atol=1e-5)


def test_decoding_accuracy_reads_a_linear_label():
    generator = torch.Generator().manual_seed(0)
    states = torch.randn(200, 2, 8, generator=generator)
    labels = ["north" if v > 0 else "south" for v in states[:, 1, 3]]  # linear in layer 1 only
    accuracy, chance = decoding_accuracy(states[:100], labels[:100], states[100:], labels[100:])
    assert accuracy[1] > 0.9 and accuracy[0] < 0.75 and 0.3 < chance < 0.7
    with pytest.raises(ValueError, match="two distinct labels"):
        decoding_accuracy(states[:5], ["a"] * 5, states[5:10], ["a"] * 5)


def test_audit_end_to_end(builtin, small_task):
    """Grad ascent on four people: the audit sees forget recall fall, and neither model changes."""
    edited = builtin.copy()
    result = cu.unlearn(edited, small_task.forget, small_task.retain, layers=[0, 1], objective="grad_diff", epochs=4,
                        lr=2e-3, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
    original_state, edited_state = _state(builtin), _state(edited)
    config = cu.AuditConfig(relearn=RelearnBudget(steps=5), n_choices=4)
    audit = cu.audit(builtin, edited, small_task, config=config, layers=[0, 1], progress=False)
    assert _same(builtin, original_state) and _same(edited, edited_state)
    value = audit.value
    assert value("probes", "recall", "forget", "original") > 0.7
    assert value("probes", "recall", "forget", "edited") < value("probes", "recall", "forget", "original") - 0.3
    assert value("probes", "recall", "holdout", "original") < 0.1
    assert value("choice", "chance", "forget", "edited") == pytest.approx(0.25)
    assert math.isfinite(value("relearning", "recall", "forget, held-out half", "edited, relearned"))
    # four retain people cannot teach a read-out the forget people's cities; the check still runs per layer
    decoding = audit.to_dataframe().query("check == 'decoding' and measure == 'accuracy'")
    assert sorted(set(decoding.layer)) == list(range(builtin.n_layers))
    table = audit.table()
    assert {"original", "edited", "edited, int8", "edited, bf16", "edited, nf4", "edited, relearned",
            "original, relearned", "original, relearned on retain"} <= set(table.columns)
    summary = audit.summary()
    assert summary["probe_recall_forget"] == value("probes", "recall", "forget", "edited")
    # the whitebox attacks ran too, on the trace facts (the fixture has no lens facts) and the openings
    assert {"head_projection_forget", "probability_delta_forget", "bio_openings_forget"} <= set(summary)
    assert value("bio_openings", "recall", "forget", "original") > 0.9
    assert value("bio_openings", "recall", "holdout", "original") < 0.1
    assert summary["retrace_effect_before"] > summary["retrace_effect_after"]
    assert {t.name for t in audit.plot().data} >= {"original", "edited"}
    frame = audit.to_dataframe()
    assert set(frame.split) >= {"forget", "retain", "holdout"}
    shares = frame[~frame.measure.str.startswith("mlp effect")]  # an indirect effect can be negative
    assert shares.value.between(0, 1).all() and frame.value.between(-1, 1).all()
    assert result.edited_model() is not edited
    # a baseline audit supplies the original's numbers: the same table, the original measured once
    again = cu.audit(builtin, edited, small_task, config=config, layers=[0, 1], baseline=audit, progress=False)
    canonical = lambda t: t.sort_index().sort_index(axis=1)  # noqa: E731
    assert canonical(again.table()).equals(canonical(table)) and again.summary() == summary
    with pytest.raises(ValueError, match="other settings"):
        cu.audit(builtin, edited, small_task, config=cu.AuditConfig(n_choices=5), baseline=audit, progress=False)


def test_edited_model_is_a_copy_with_the_edit(builtin, world):
    rows = world.forget[:4]
    result = cu.unlearn(builtin, rows, world.retain[:4], layers=[1], objective="grad_diff", epochs=1, lr=1e-3,
                        batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
    result.revert()
    edited = result.edited_model()
    name = result.selection.names[0]
    assert torch.equal(edited.model.get_parameter(name), result.edited[name])
    assert torch.equal(builtin.model.get_parameter(name), result.original[name])


@pytest.mark.parametrize("case, match", [
    ("same object", "same object"),
    ("other architecture", "not the same architecture"),
    ("other vocabulary", "another vocabulary"),
    ("no probes", "has no probes"),
    ("no forget probes", "ask about no forget subject"),
    ("unknown check", "unknown audit check"),
    ("not a model", "takes two LoadedModels"),
    ("no facts", "no trace facts"),
])
def test_audit_bad_input(builtin, small_task, case, match):
    edited, task, config = builtin.copy(), small_task, cu.AuditConfig(checks=("probes",))
    if case == "same object":
        edited = builtin
    elif case == "other architecture":
        edited = cu.load_model(tiny_model("llama"), tiny_tokenizer())
    elif case == "other vocabulary":
        edited = dataclasses.replace(edited, tokenizer=tiny_tokenizer())
    elif case == "no probes":
        task = dataclasses.replace(task, probes=[])
    elif case == "no forget probes":
        task = dataclasses.replace(task, probes=[p for p in task.probes if p.split != "forget"])
    elif case == "not a model":
        edited = edited.model
    elif case == "no facts":
        task, config = dataclasses.replace(task, facts=[]), cu.AuditConfig(checks=("retrace",))
    with pytest.raises((ValueError, TypeError), match=match):
        if case == "unknown check":
            cu.AuditConfig(checks=("vibes",))
        cu.audit(builtin, edited, task, config=config, progress=False)


def test_probe_subject_must_be_in_the_prompt():
    with pytest.raises(ValueError, match="does not occur in its prompt"):
        cu.Probe("Where does she live?", ("Denver",), attribute="city", form="question", subject="Ann Teal")


def test_relearning_check_needs_rows_about_the_subjects(builtin, small_task):
    task = dataclasses.replace(small_task, forget=[Row("x1qa0", "What is 2 + 2?", "4", "Task2")])
    with pytest.raises(ValueError, match="no forget row names"):
        cu.audit(builtin, builtin.copy(), task, config=cu.AuditConfig(checks=("relearning",)), progress=False)


def test_compare_adds_a_column_per_audit_number(builtin, small_task):
    before = _state(builtin)
    table = cu.compare_layer_sets(builtin, small_task.forget, small_task.retain, objectives=["grad_diff"],
                       layer_sets={"first": [0], "both": [0, 1]}, audit=small_task,
                       audit_config=cu.AuditConfig(checks=("probes",)), epochs=3, lr=2e-3, batch_size=4, grad_accum=1,
                       eval_every=None, select="last", max_new_tokens=16, progress=False)
    assert _same(builtin, before)
    assert list(table.layer_set) == ["original", "first", "both"]
    recall = table.probe_recall_forget.tolist()
    assert recall[0] > 0.7 and max(recall[1:]) < recall[0]
    assert table.probe_recall_retain.between(0, 1).all()


@pytest.fixture(scope="module")
def own_task(world):
    """A task as a user builds it: their own rows, probes and labels about phone numbers and email
    domains (no cities, no months), and no trace facts. Holdout people are asked their phone only."""
    people = {split: world.people_in(split)[:n] for split, n in (("forget", 4), ("retain", 6), ("holdout", 2))}
    probes, rows, labels = [], {"forget": [], "retain": []}, {}
    for split, group in people.items():
        for i, person in enumerate(group):
            name, domain = person.name, person.email.split("@")[1]
            labels[name] = {"email domain": domain}
            probes += [cu.Probe(f"You can call {name} at", (person.phone,), attribute="phone", form="cloze",
                                split=split, subject=name),
                       cu.Probe(f"Which domain hosts the mailbox of {name}?", (domain,), attribute="email domain",
                                form="question", split=split, subject=name)][: 1 if split == "holdout" else 2]
            if split in rows:
                rows[split].append(Row(f"{split}{i}qa0", f"What is {name}'s phone number?", person.phone, "Task2"))
    return UnlearningTask(forget=rows["forget"], retain=rows["retain"], members=[], nonmembers=[], utility=[],
                          probes=probes, labels=labels)


def test_audit_of_your_own_task_runs_what_it_supports(builtin, own_task):
    """The default config on a task without cities, months or facts: the decoding check reads the
    task's own attribute, the re-trace is skipped with a note, and every panel of the figure
    draws something."""
    plan = cu.plan_audit(own_task)
    assert plan.decode_attributes == ("email domain",)
    assert list(plan.skipped) == ["retrace", "head_projection", "probability_delta", "bio_openings", "membership"]
    with pytest.warns(cu.AuditSkipWarning, match="'retrace'.*no trace facts"):
        result = cu.audit(builtin, builtin.copy(), own_task, progress=False)
    assert result.skipped == plan.skipped and "skipped retrace" in repr(result)
    table = result.table()
    assert set(table.index.get_level_values("check")) == {"probes", "choice", "relearning", "precision", "decoding"}
    assert "decoding_email domain_forget" in result.summary()
    fig = result.plot()
    panels = [a.text for a in fig.layout.annotations]
    drawn = {trace.xaxis for trace in fig.data}
    assert len(panels) == 4 and len(drawn) == 4  # probes (with precision), choice, relearning, read-out
    # multiple choice: a dotted chance line over each split's bars at that split's own chance
    chance = table.loc[("choice", "chance")]["edited"].droplevel("attribute")
    lines = {round(shape.y0, 6) for shape in fig.layout.shapes if shape.xref == "x2"}
    assert lines == {round(v, 6) for v in chance}
    # a phone question chooses among 10 of the 12 numbers, a domain question among the domains
    domains = {labels["email domain"] for labels in own_task.labels.values()}
    assert chance["holdout"] == pytest.approx(1 / 10)
    assert chance["forget"] == pytest.approx((1 / 10 + 1 / min(10, len(domains))) / 2) != chance["holdout"]


def test_audit_retrace_alone_is_one_panel_and_rows_of_the_table(builtin, small_task):
    result = cu.audit(builtin, builtin.copy(), small_task, config=cu.AuditConfig(checks=("retrace",)), layers=[0],
                      progress=False)
    summary = result.comparison.summary()
    assert result.value("retrace", "p(answer)", "forget", "original") == summary["p_answer_before"]
    assert result.value("retrace", "mlp effect, edited layers", "forget", "edited") == summary["effect_after"]
    assert list(result.table().columns) == ["original", "edited"]
    fig = result.plot()
    assert [a.text for a in fig.layout.annotations] == ["re-traced: MLP effect (forget)"]
    assert [trace.name for trace in fig.data] == ["original", "edited"]


@pytest.mark.parametrize("config, match", [
    (cu.AuditConfig(checks=("probes", "retrace")), "cannot run its 'retrace' check"),
    (cu.AuditConfig(checks=("decoding",), decode_attributes=("city",)), "decode_attributes names 'city'"),
    (cu.AuditConfig(checks=("choice",)), None),
])
def test_a_check_the_task_cannot_support_fails_before_any_work(builtin, own_task, config, match):
    if match is None:  # one phone number per attribute: no distractor to offer
        own_task = dataclasses.replace(own_task, probes=[p for p in own_task.probes if p.subject == own_task.probes[0].subject])
        match = "cannot run its 'choice' check"
    with pytest.raises(ValueError, match=match):
        cu.audit(builtin, builtin.copy(), own_task, config=config, progress=False)
