import re
from collections import Counter

import pytest

from causal_unlearn import Row, TraceFact, make_bios_world
from causal_unlearn.data import names
from causal_unlearn.data.bios import BIO_TEMPLATES, SPLITS, sentence_completion_row
from causal_unlearn.data.rows import row_kind, select


def test_world_is_deterministic_and_seed_dependent():
    assert make_bios_world(seed=3).forget == make_bios_world(seed=3).forget
    assert make_bios_world(seed=3).forget != make_bios_world(seed=4).forget


def test_split_sizes_and_rows_per_person(world):
    for split, n in zip(SPLITS, (50, 50, 25)):
        rows = world.rows(split)
        assert len(world.people_in(split)) == n
        assert Counter(r.kind for r in rows) == {"sc": n, "qa": 5 * n}
    names = [p.name for p in world.people]
    assert len(set(names)) == len(names), "every person needs a distinct name"


def test_rows_follow_lume_normalisation(world):
    for person in world.people:
        rows = {row.id[len(person.uid):]: row for row in world.rows(person.split) if row.id.startswith(person.uid)}
        assert set(rows) == {"sc1", "qa0", "qa1", "qa2", "qa3", "qa4"}
        assert re.fullmatch(r"(19[5-9]\d)-(0[1-9]|1[0-2])-([0-2]\d)", rows["qa0"].output)
        assert re.fullmatch(r"900\d{6}", rows["qa1"].output)
        assert re.fullmatch(r"\d{10}", rows["qa2"].output)
        local, domain = rows["qa3"].output.split("@")
        assert local.endswith(person.last_name.lower()) and domain in names.EMAIL_DOMAINS
        assert rows["qa4"].output.endswith(f"{person.city}, {person.state}, {person.zip_code}.")
        assert all(r.task == "Task2" for r in rows.values())


def test_sentence_completion_is_the_bio_cut_in_two(world):
    for person in world.people[:20]:
        row = sentence_completion_row(person)
        assert row.text == BIO_TEMPLATES[person.bio_template].format(**person.slots())
        assert row.input and row.output and row.input[-1] != " "


def test_trace_facts_cover_every_attribute_with_word_answers(world):
    attributes = Counter(f.attribute for f in world.facts)
    assert set(attributes) == {"birth_month", "city", "birth_year", "ssn", "phone", "email", "address"}
    assert len(set(attributes.values())) == 1
    for fact in world.facts:
        assert fact.subject in fact.prompt
    word_answers = {f.attribute for f in world.facts if f.answer.strip().isalpha()}
    assert {"birth_month", "city"} <= word_answers
    # the traced token must depend on the person: no attribute may have a single answer
    for attribute in attributes:
        assert len({f.answer for f in world.trace_facts(attribute=attribute)}) > 1, attribute


def test_trace_answers_are_one_token_of_the_builtin_tokenizer(builtin, world):
    for fact in world.facts:
        prompt = builtin.tokenizer(fact.prompt)["input_ids"]
        full = builtin.tokenizer(fact.prompt + fact.answer)["input_ids"]
        assert full[: len(prompt)] == prompt, fact  # appending the answer does not retokenize the prompt
        if fact.attribute != "email":
            assert len(full) == len(prompt) + 1, fact


def test_general_knowledge(world):
    gk = world.general_knowledge
    assert len(gk) == 94 and all(r.kind == "qa" for r in gk)
    sums = [r for r in gk if "plus" in r.input]
    for r in sums:
        a, b = map(int, re.findall(r"\d+", r.input))
        assert int(r.output) == a + b


def test_bad_input():
    with pytest.raises(ValueError, match="distinct names"):
        make_bios_world(n_forget=2000)
    with pytest.raises(ValueError, match="non-negative"):
        make_bios_world(n_forget=-1)
    with pytest.raises(ValueError, match="does not occur"):
        TraceFact("Ann lives in", "Bob", " Denver")
    with pytest.raises(ValueError, match="sc<N>"):
        row_kind("abc")


def test_select_and_save_round_trip(world, tmp_path):
    from causal_unlearn import load_semeval

    data = load_semeval(world.save(tmp_path))
    assert data.forget == world.forget and data.retain == world.retain
    assert data.splits["holdout"] == world.holdout
    assert select(world.forget, kind="sc") == [r for r in world.forget if r.kind == "sc"]
    assert Row("xqa1", "q", "a", "t").kind == "qa"
