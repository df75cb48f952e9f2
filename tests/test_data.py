import re
from collections import Counter

import pytest

from causal_unlearn import Row, TraceFact, make_bios_world
from causal_unlearn.data import names
from causal_unlearn.data import phrasings
from causal_unlearn.data.bios import SPLITS, sentence_completion_row
from causal_unlearn.builtin.train import corpus_texts
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
        assert row.text == world.bios(person)[0]
        assert row.input and row.output and row.input[-1] != " "


def test_bios_are_knowledge_augmented(world):
    """Several bios per person, each every attribute once, in varied order and wording, the full
    name in every sentence (Allen-Zhu & Li 2023)."""
    canonical = {a: wordings[0] for a, wordings in phrasings.BIO_SENTENCES.items()}
    for person in world.people[:20]:
        texts = world.bios(person)
        assert len(texts) == 6 and len(set(texts)) == 6
        for text in texts:
            sentences = re.split(r"(?<=\.) (?=[A-Z])", text)
            assert len(sentences) == len(phrasings.ATTRIBUTES)
            assert all(s.startswith(person.name) for s in sentences), text
        assert all(canonical[a].format(**person.slots()) in texts[0] for a in phrasings.ATTRIBUTES)
        first_sentences = {re.split(r"(?<=\.) ", t)[0] for t in texts}
        assert len(first_sentences) > 1, "the sentence order must vary between bios"


def test_many_training_phrasings_per_attribute(world):
    person = world.people[0]
    for attribute in phrasings.ATTRIBUTES:
        questions = world.training_questions(person, attribute)
        assert len({q.input for q in questions}) >= 20
        assert len({q.output for q in questions}) == 1
    official = {row.input for row in world.rows(person.split) if row.kind == "qa" and row.id.startswith(person.uid)}
    trained = {q.input for a in phrasings.QA_ATTRIBUTES for q in world.training_questions(person, a)}
    assert official <= trained


def test_probes_cover_every_attribute_and_person(world):
    for split in SPLITS:
        probes = world.probes(split)
        assert {p.person_id for p in probes} == {p.uid for p in world.people_in(split)}
        for attribute in phrasings.ATTRIBUTES:
            forms = Counter(p.form for p in probes if p.attribute == attribute and p.person_id == probes[0].person_id)
            assert forms["question"] >= 4 and forms["cloze"] >= 2, (attribute, forms)
    person = world.people[0]
    by_attribute = {p.attribute: p for p in world.probes(person.split) if p.person_id == person.uid}
    day, year = person.birth_date.day, person.birth_date.year
    assert by_attribute["birth_date"].answers == (person.birth_date.isoformat(), f"{person.month} {day}, {year}")
    assert by_attribute["city"].answers == (person.city,)
    assert len(world.probes("general_knowledge")) == 2 * len(world.general_knowledge)


def test_probes_occur_in_no_training_text(world):
    """No probe prompt, for any person, is part of any text the recipe trains on (nor of any
    text the tokenizer sees). Every such text about a person names them, so compare per name."""
    texts = corpus_texts(world)
    for person in world.people:
        about = [t for t in texts if person.name in t]
        for probe in world.probes(person.split):
            if probe.person_id == person.uid:
                assert not any(probe.prompt in t for t in about), probe.prompt
    for probe in world.probes("general_knowledge"):
        assert not any(probe.prompt in t for t in texts), probe.prompt
    # and the templates themselves are disjoint from the training templates
    trained = {q for a in phrasings.ATTRIBUTES for q in phrasings.question_templates(a)}
    tables = (phrasings.PROBE_QUESTIONS, phrasings.PROBE_CLOZES)
    probe_templates = {t for table in tables for templates in table.values() for t in templates}
    assert not trained & probe_templates


def test_probe_recall_matching():
    from causal_unlearn.data.probes import Probe

    probe = Probe("Ann Teal's birthday falls on", ("1984-03-05", "March 5, 1984"), attribute="birth_date", form="cloze")
    assert probe.recalled_in(" march 5, 1984.") and probe.recalled_in("1984-03-05")
    assert not probe.recalled_in(" March 15, 1984") and not probe.recalled_in(" 1984")
    with pytest.raises(ValueError, match="non-empty answer"):
        Probe("x", ("",), attribute="city", form="cloze")
    with pytest.raises(ValueError, match="form"):
        Probe("x", ("y",), attribute="city", form="essay")


def test_trace_facts_cover_every_attribute_with_word_answers(world):
    attributes = Counter(f.attribute for f in world.facts_to_trace())
    assert set(attributes) == {"birth_month", "city", "birth_year", "ssn", "phone", "email", "address"}
    assert len(set(attributes.values())) == 1
    for fact in world.facts:
        assert fact.subject in fact.prompt
    word_answers = {f.attribute for f in world.facts if f.answer.strip().isalpha()}
    assert {"birth_month", "city"} <= word_answers
    # the traced token must depend on the person: no attribute may have a single answer
    for attribute in attributes:
        assert len({f.answer for f in world.facts_to_trace(attribute=attribute)}) > 1, attribute
    held_out = world.facts_to_trace(held_out=True)
    assert {f.attribute for f in held_out} == {"birth_month", "city"} and len(held_out) == 2 * len(world.people)
    texts = corpus_texts(world)
    for fact in held_out[:10]:
        assert not any(fact.prompt in t for t in texts), fact.prompt
    assert len(world.facts_to_trace(held_out=None)) == len(world.facts)


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
