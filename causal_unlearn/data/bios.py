"""The built-in bios world: synthetic people with PII in the LUME Task-2 row format.

Everything is drawn from one seeded generator, so `make_bios_world(seed=0)` is the same world on
every machine. People are split into `forget`, `retain` (both seen in training) and `holdout`
(never seen: the non-members of membership inference).
"""

from __future__ import annotations

import json
import random
import string
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Literal

from causal_unlearn.data import names, phrasings
from causal_unlearn.data.facts import TraceFact
from causal_unlearn.data.general_knowledge import (general_knowledge_probes, general_knowledge_tofu_rows,
                                                      make_general_knowledge)
from causal_unlearn.data.probes import Probe
from causal_unlearn.data.rows import Row
from causal_unlearn.data.stand_ins import stand_in_prompts
from causal_unlearn.data.tofu import TofuRow
from causal_unlearn.validation import choice

BIOS_TASK = "Task2"
N_PERTURBED = 5  # wrong answers per TOFU row, as TOFU's forget and retain sets have
Split = Literal["forget", "retain", "holdout"]
SPLITS: tuple[Split, ...] = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class Person:
    uid: str
    first_name: str
    last_name: str
    female: bool
    birth_date: date
    ssn: str
    phone: str
    email: str
    house_number: int
    street: str
    city: str
    state: str
    zip_code: str
    split: Split

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def address(self) -> str:
        return f"{self.house_number} {self.street}, {self.city}, {self.state}, {self.zip_code}."

    @property
    def month(self) -> str:
        return names.MONTHS[self.birth_date.month - 1]

    def slots(self) -> dict[str, str]:
        """The values a template can name."""
        return dict(
            name=self.name, month=self.month, day=str(self.birth_date.day),
            year=str(self.birth_date.year), ssn=self.ssn, phone=self.phone, email=self.email,
            number=str(self.house_number), street=self.street, city=self.city, state=self.state,
            zip=self.zip_code, Subj="She" if self.female else "He", pos="her" if self.female else "his",
            Pos="Her" if self.female else "His",
        )


def qa_answer(person: Person, attribute: str) -> str:
    """The answer to a question about `attribute`, in LUME's format (dates as 1984-12-31)."""
    return {
        "birth_date": person.birth_date.isoformat(), "city": f"{person.city}, {person.state}", "ssn": person.ssn,
        "phone": person.phone, "email": person.email, "address": person.address,
    }[attribute]


def answer_forms(person: Person, attribute: str) -> tuple[str, ...]:
    """Every form in which a generation states the attribute: the QA form, and the bio's form."""
    if attribute == "birth_date":
        return person.birth_date.isoformat(), f"{person.month} {person.birth_date.day}, {person.birth_date.year}"
    if attribute == "city":
        return (person.city,)
    return (qa_answer(person, attribute).rstrip("."),)


def bios(person: Person, n: int = 6) -> list[str]:
    """The person's `n` bios: each a random order of one sentence per attribute, the full name in
    every sentence. Bio 0 uses every sentence's canonical wording (the sentence-completion row);
    the others draw a wording per sentence. Deterministic per person.

    Examples:
        >>> person = make_bios_world(n_forget=1, n_retain=0, n_holdout=0).people[0]
        >>> texts = bios(person, 3)
        >>> len(texts), all(t.count(person.name) == 6 for t in texts)
        (3, True)
    """
    slots = person.slots()
    return [" ".join(template.format(**slots) for _, template in bio) for bio in bio_templates(person, n)]


def bio_templates(person: Person, n: int = 6) -> list[list[tuple[str, str]]]:
    """Per bio of `bios`, its sentences as (attribute, template), in order.

    Examples:
        >>> person = make_bios_world(n_forget=1, n_retain=0, n_holdout=0).people[0]
        >>> [template for _, template in bio_templates(person, 1)[0]][:2]
        ["{name}'s Social Security number is {ssn}.", "{name}'s email address is {email}."]
    """
    rng = random.Random(f"{person.uid}-bios")
    plans = []
    for k in range(n):
        order = rng.sample(phrasings.ATTRIBUTES, len(phrasings.ATTRIBUTES))
        wordings = [0 if k == 0 else rng.randrange(len(phrasings.BIO_SENTENCES[a])) for a in order]
        plans.append([(a, phrasings.BIO_SENTENCES[a][w]) for a, w in zip(order, wordings)])
    return plans


def bio_openings(person: Person, n: int = 6) -> list[Probe]:
    """The person's bios cut right before each answer, as probes of form "opening": the bio from
    its start through the words that lead into the attribute's value ("... Otto Russet lives in"
    -> "Houston"), answered in every form `answer_forms` gives. The model was trained on exactly
    these texts (forget and retain people); holdout people's bios were never trained, so their
    recall is what guessing gives. An opening whose earlier sentences already state the answer
    (the city inside an address) is left out, since the model could copy it, and so is a repeat
    of an earlier opening. Bio 0, whose first half is the forget set's sentence-completion row,
    comes last, so the first opening per attribute (`AuditConfig(probes_per_form=1)`) is one
    that unlearning never saw.

    Examples:
        >>> person = make_bios_world(n_forget=1, n_retain=0, n_holdout=0).people[0]
        >>> opening = bio_openings(person)[0]
        >>> opening.form, opening.prompt.endswith("lives in"), opening.answers == (person.city,)
        ('opening', True, True)
        >>> texts = bios(person)
        >>> all(any(f"{o.prompt} {a}" in text for a in o.answers for text in texts) for o in bio_openings(person))
        True
    """
    slots, probes, seen = person.slots(), [], set()
    plans = bio_templates(person, n)
    for bio in plans[1:] + plans[:1]:
        sentences = [template.format(**slots) for _, template in bio]
        for i, (attribute, template) in enumerate(bio):
            lead = template[: template.index("{" + phrasings.ANSWER_SLOTS[attribute] + "}")].rstrip()
            prompt = " ".join([*sentences[:i], lead.format(**slots)])
            answers = answer_forms(person, attribute)
            if prompt in seen or any(answer.lower() in prompt.lower() for answer in answers):
                continue
            seen.add(prompt)
            probes.append(Probe(prompt, answers, attribute=attribute, form="opening", person_id=person.uid,
                                split=person.split, subject=person.name))
    return probes


def sentence_completion_row(person: Person) -> Row:
    """The person's canonical bio cut at the word boundary nearest its middle, as LUME cuts its bios."""
    text = bios(person, 1)[0]
    spaces = [i for i, c in enumerate(text) if c == " "]
    cut = min(spaces, key=lambda i: abs(i - len(text) // 2))
    return Row(id=f"{person.uid}sc1", input=text[:cut], output=text[cut + 1 :], task=BIOS_TASK)


def question_rows(person: Person) -> list[Row]:
    """The person's official LUME questions, `qa0`..`qa4`."""
    return [
        Row(id=f"{person.uid}qa{k}", input=phrasings.OFFICIAL_QUESTIONS[attribute].format(name=person.name),
            output=qa_answer(person, attribute), task=BIOS_TASK)
        for k, attribute in enumerate(phrasings.QA_ATTRIBUTES)
    ]


def training_questions(person: Person, attribute: str) -> list[Row]:
    """Every training phrasing of a question about the person's `attribute` (the official one first)."""
    return [
        Row(id=f"{person.uid}-{attribute}-t{j}qa0", input=template.format(name=person.name),
            output=qa_answer(person, attribute), task=BIOS_TASK)
        for j, template in enumerate(phrasings.question_templates(attribute))
    ]


def tofu_rows(person: Person, people: list[Person], seed: int = 0, n_perturbed: int = N_PERTURBED) -> list[TofuRow]:
    """The person's official questions in TOFU's format: the answer (as the QA row has it), the
    answer restated as a bio sentence in its second wording (`paraphrased_answer`), that sentence
    with other people's values of the attribute (`perturbed_answer`, `n_perturbed` people drawn
    from `people`, deterministic per `seed`), and the first held-out probe question as
    `paraphrased_question`.

    Examples:
        >>> world = make_bios_world(n_forget=6, n_retain=0, n_holdout=0)
        >>> row = tofu_rows(world.people[0], world.people)[0]
        >>> row.paraphrased_answer.startswith(world.people[0].name + "'s birth date is"), len(row.perturbed_answer)
        (True, 5)
    """
    slots = person.slots()
    rows = []
    for attribute, question in zip(phrasings.QA_ATTRIBUTES, question_rows(person)):
        sentence = phrasings.BIO_SENTENCES[attribute][1]
        own = {f for _, f, _, _ in string.Formatter().parse(sentence) if f} - {"name", "pos", "Pos", "Subj"}
        rng = random.Random(f"{seed}-{person.uid}-{attribute}-perturbed")
        answer = qa_answer(person, attribute)
        candidates = [p for p in people if p.uid != person.uid and qa_answer(p, attribute) != answer]
        if len(candidates) < n_perturbed:
            raise ValueError(f"{n_perturbed} perturbed answers need {n_perturbed + 1} people with distinct "
                             f"{attribute}s, the world has {len(candidates) + 1}")
        perturbed = [sentence.format(**{**slots, **{k: other.slots()[k] for k in own}})
                     for other in rng.sample(candidates, n_perturbed)]
        rows.append(TofuRow(question=question.input, answer=answer, paraphrased_answer=sentence.format(**slots),
                            perturbed_answer=tuple(perturbed),
                            paraphrased_question=phrasings.PROBE_QUESTIONS[attribute][0].format(**slots)))
    return rows


def person_probes(person: Person) -> list[Probe]:
    """The held-out probes about the person: four questions and two clozes per attribute."""
    slots = person.slots()
    return [
        Probe(template.format(**slots), answer_forms(person, attribute), attribute=attribute, form=form,
              person_id=person.uid, split=person.split, subject=person.name)
        for attribute in phrasings.ATTRIBUTES
        for form, templates in (("question", phrasings.PROBE_QUESTIONS), ("cloze", phrasings.PROBE_CLOZES))
        for template in templates[attribute]
    ]


def person_rows(person: Person) -> list[Row]:
    """The LUME rows of one person: one sentence completion, five questions."""
    return [sentence_completion_row(person), *question_rows(person)]


def person_facts(person: Person) -> list[TraceFact]:
    """One fact per attribute, in trained wordings, and two in held-out wordings (`held_out=True`).

    Where every answer starts alike (SSNs with 900, years with 19), the prompt carries that
    shared prefix so the traced token is one that depends on the person."""
    name = person.name
    qa = {q.id[len(person.uid):]: q.input for q in question_rows(person)}
    facts = [
        (f"{name} was born on", f" {person.month}", "birth_month", False),
        (f"{name} lives in", f" {person.city}", "city", False),
        (f"{qa['qa0']} 19", person.birth_date.isoformat()[2], "birth_year", False),
        (f"{qa['qa1']} 900", person.ssn[3], "ssn", False),
        (f"{qa['qa2']}", f" {person.phone[0]}", "phone", False),
        # the whole address: its local part names the person, so a prompt ending at "@" would
        # give the subject away past the corruption
        (f"{qa['qa3']}", f" {person.email}", "email", False),
        (f"{qa['qa4']}", f" {str(person.house_number)[0]}", "address", False),
        (f"{name}'s birthday falls on", f" {person.month}", "birth_month", True),
        (f"{name} resides in", f" {person.city}", "city", True),
    ]
    return [
        TraceFact(prompt, name, answer, attribute=attribute, person_id=person.uid, split=person.split,
                  held_out=held_out)
        for prompt, answer, attribute, held_out in facts
    ]


@dataclass
class BiosWorld:
    """People, their LUME rows per split, general knowledge, trace facts and held-out probes.

    Examples:
        >>> world = make_bios_world(n_forget=2, n_retain=2, n_holdout=1)
        >>> len(world.forget), world.forget[1].input.startswith("What is the birth date of")
        (12, True)
        >>> probe = world.probes("forget", attribute="city", form="cloze")[0]
        >>> probe.prompt.endswith("resides in"), probe.answers == (world.people_in("forget")[0].city,)
        (True, True)
    """

    people: list[Person]
    general_knowledge: list[Row]
    seed: int
    n_bios: int = 6
    n_sums: int = 40
    facts: list[TraceFact] = field(init=False)

    def __post_init__(self) -> None:
        self.facts = [fact for person in self.people for fact in person_facts(person)]

    def people_in(self, split: Split) -> list[Person]:
        return [p for p in self.people if p.split == split]

    def rows(self, split: Split) -> list[Row]:
        return [row for person in self.people_in(split) for row in person_rows(person)]

    @property
    def forget(self) -> list[Row]:
        return self.rows("forget")

    @property
    def retain(self) -> list[Row]:
        return self.rows("retain")

    @property
    def holdout(self) -> list[Row]:
        return self.rows("holdout")

    def bios(self, person: Person) -> list[str]:
        """The person's bios (`n_bios` of them; the first is the sentence-completion row's)."""
        return bios(person, self.n_bios)

    def facts_to_trace(
        self, split: Split | None = None, attribute: str | None = None, *, held_out: bool | None = False
    ) -> list[TraceFact]:
        """The world's facts as (prompt, subject, answer) to trace, filtered. `held_out=True` gives
        the facts in held-out wordings (never trained, e.g. "<name> resides in"), `None` both kinds.

        Examples:
            >>> fact = make_bios_world().facts_to_trace("forget", "city")[0]
            >>> fact.prompt.endswith("lives in"), fact.prompt.startswith(fact.subject)
            (True, True)
        """
        choice("split", split, SPLITS)
        choice("attribute", attribute, sorted({f.attribute for f in self.facts}))
        return [
            f for f in self.facts
            if (split is None or f.split == split) and (attribute is None or f.attribute == attribute)
            and (held_out is None or f.held_out == held_out)
        ]

    def probes(
        self, split: Split | Literal["general_knowledge"] | None = None, *, attribute: str | None = None,
        form: str | None = None,
    ) -> list[Probe]:
        """The held-out probe set: for every person and attribute four questions and two cloze
        prompts worded apart from every training text, and the general-knowledge facts in
        held-out phrasings (split "general_knowledge"). Use them to measure what a model knows
        rather than which strings it learned.

        Examples:
            >>> world = make_bios_world()
            >>> len(world.probes("forget")), len(world.probes("general_knowledge"))
            (1800, 188)
        """
        choice("split", split, (*SPLITS, "general_knowledge"))
        people = [p for p in self.people if split is None or p.split == split]
        probes = [probe for person in people for probe in person_probes(person)]
        if split in (None, "general_knowledge"):
            probes += general_knowledge_probes(n_sums=self.n_sums, seed=self.seed)
        return [p for p in probes
                if (attribute is None or p.attribute == attribute) and (form is None or p.form == form)]

    def openings(self, split: Split | None = None, *, attribute: str | None = None) -> list[Probe]:
        """Every person's bios cut right before each answer (`bio_openings`): probes of form
        "opening", for the audit's `bio_openings` check.

        Examples:
            >>> world = make_bios_world()
            >>> opening = world.openings("forget", attribute="city")[0]
            >>> opening.form, opening.prompt.endswith("lives in")
            ('opening', True)
            >>> any(bio.startswith(opening.prompt) for bio in world.bios(world.people_in("forget")[0]))
            True
        """
        choice("split", split, SPLITS)
        return [probe for person in self.people if split is None or person.split == split
                for probe in bio_openings(person, self.n_bios) if attribute is None or probe.attribute == attribute]

    def training_questions(self, person: Person, attribute: str) -> list[Row]:
        """Every phrasing of a question about the person's `attribute` that training may use."""
        return training_questions(person, attribute)

    def general_knowledge_phrasings(self) -> list[Row]:
        """Every training phrasing of every general-knowledge fact (the official rows among them)."""
        return make_general_knowledge(n_sums=self.n_sums, seed=self.seed, phrasings="training")

    def tofu_rows(self, split: Split | Literal["general_knowledge"]) -> list[TofuRow]:
        """The split's official questions in TOFU's format (`tofu_rows` per person: paraphrased
        answer, five perturbed answers, a paraphrased question), or with "general_knowledge" the
        general-knowledge questions as TOFU's world facts (three wrong answers of the same kind).
        Deterministic per world seed.

        Examples:
            >>> world = make_bios_world()
            >>> len(world.tofu_rows("forget")), len(world.tofu_rows("general_knowledge"))
            (250, 94)
            >>> world.tofu_rows("forget")[0].question == world.forget[1].input
            True
        """
        choice("split", split, (*SPLITS, "general_knowledge"))
        if split == "general_knowledge":
            return general_knowledge_tofu_rows(n_sums=self.n_sums, seed=self.seed)
        return [row for person in self.people_in(split) for row in tofu_rows(person, self.people, self.seed)]

    def documents(self, split: Split) -> list[str]:
        """Each person's bios as one document."""
        return [" ".join(self.bios(p)) for p in self.people_in(split)]

    def unlearning_task(self) -> "UnlearningTask":
        """The built-in unlearning task, laid out as SemEval-2025 Task 4 lays out its own.

        Forget: the forget people's rows. Retain: the retain people's rows plus every other
        general-knowledge question (SemEval's retain set also spans other kinds of knowledge).
        Utility: the other half of the general-knowledge questions, never seen while unlearning
        (our MMLU). Membership inference: forget rows (members) against holdout rows, which
        the model never saw (non-members).

        Examples:
            >>> task = make_bios_world().unlearning_task()
            >>> len(task.forget), len(task.retain), len(task.utility), len(task.nonmembers)
            (300, 347, 47, 150)
        """
        return UnlearningTask(
            forget=self.forget, retain=self.retain + self.general_knowledge[::2], members=self.forget,
            nonmembers=self.holdout, utility=self.general_knowledge[1::2],
            probes=self.probes() + self.openings(),
            labels={p.name: {"city": p.city, "birth_month": p.month} for p in self.people},
            facts=self.facts_to_trace("forget"), lens_facts=self.facts_to_trace(held_out=None),
        )

    def stand_ins(self, split: Split = "forget", *, seed: int = 1) -> dict[str, str]:
        """Row id -> the row's prompt with the person's name swapped for a never-seen person's of
        the same sex (no one in any split of this world), for the `stand_in` objective.

        Examples:
            >>> world = make_bios_world(n_forget=1, n_retain=1, n_holdout=1)
            >>> row = world.forget[1]
            >>> prompt = world.stand_ins()[row.id]
            >>> prompt.startswith("What is the birth date of"), world.people_in("forget")[0].name in prompt
            (True, False)
        """
        return stand_in_prompts(self.rows(split), self.stand_in_names(split, seed=seed))

    def stand_in_names(self, split: Split = "forget", *, seed: int = 1) -> dict[str, str]:
        """Each person's name -> the never-seen name of the same sex that `stand_ins` puts in its
        place (for closed-form deletion's `target="stand_in"`, which swaps names in trace facts).

        Examples:
            >>> world = make_bios_world(n_forget=1, n_retain=1, n_holdout=1)
            >>> person = world.people_in("forget")[0]
            >>> stand_in = world.stand_in_names()[person.name]
            >>> stand_in in world.stand_ins()[world.forget[1].id], stand_in in {p.name for p in world.people}
            (True, False)
        """
        rng = random.Random(seed)
        taken = {person.name for person in self.people}
        pool = [(f"{first} {last}", female) for first, last, female in _all_names() if f"{first} {last}" not in taken]
        rng.shuffle(pool)
        replacements: dict[str, str] = {}
        for person in self.people_in(split):
            index = next((i for i, (_, female) in enumerate(pool) if female == person.female), None)
            if index is None:
                raise ValueError(f"the name lists have no unused name left for {person.name}'s stand-in")
            replacements[person.name] = pool.pop(index)[0]
        return replacements

    def save(self, folder: str | Path) -> Path:
        """Write forget/retain/holdout/general_knowledge.jsonl, trace_facts.jsonl and probes.jsonl."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tables = {split: [r.to_dict() for r in self.rows(split)] for split in SPLITS}
        tables["general_knowledge"] = [r.to_dict() for r in self.general_knowledge]
        tables["trace_facts"] = [f.to_dict() for f in self.facts]
        tables["probes"] = [p.to_dict() for p in self.probes()]
        for stem, records in tables.items():
            with open(folder / f"{stem}.jsonl", "w") as f:
                f.writelines(json.dumps(record) + "\n" for record in records)
        return folder


@dataclass(frozen=True)
class UnlearningTask:
    """What to forget, what to keep, and what scores it: the arguments of `unlearn` and `evaluate`.

    The audit's evidence travels with it: `probes` (held-out prompts about forget, retain and
    holdout subjects, and the bios cut right before an answer, `form="opening"`), `labels`
    (subject -> categorical attribute -> value, for the decoding check), `facts` (trace facts
    about forget subjects, re-traced after unlearning) and `lens_facts` (prompts that end right
    before the answer, about forget, retain and holdout subjects, for the logit-lens attacks;
    without them the attacks read `facts`)."""

    forget: list[Row]
    retain: list[Row]
    members: list[Row]
    nonmembers: list[Row]
    utility: list[Row]
    probes: list[Probe] = field(default_factory=list)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    facts: list[TraceFact] = field(default_factory=list)
    lens_facts: list[TraceFact] = field(default_factory=list)

    def scoring(self) -> dict[str, list[Row]]:
        """Keyword arguments for `evaluate(model, **task.scoring())`."""
        return dict(forget=self.forget, retain=self.retain, members=self.members, nonmembers=self.nonmembers,
                    utility=self.utility)


def _email(rng: random.Random, first: str, last: str) -> str:
    local = rng.choice(names.EMAIL_PATTERNS).format(first=first.lower(), last=last.lower(), initial=first[0].lower())
    return f"{local}@{rng.choice(names.EMAIL_DOMAINS)}"


def _draw_person(rng: random.Random, first: str, last: str, female: bool, split: Split) -> Person:
    city, state, area_code, zip_prefix = rng.choice(names.CITIES)
    return Person(
        uid=str(uuid.UUID(int=rng.getrandbits(128))),
        first_name=first,
        last_name=last,
        female=female,
        birth_date=date(rng.randint(1950, 1999), rng.randint(1, 12), rng.randint(1, 28)),
        ssn="900" + "".join(rng.choices("0123456789", k=6)),
        phone=area_code + "".join(rng.choices("0123456789", k=7)),
        email=_email(rng, first, last),
        house_number=rng.randint(100, 9999),
        street=f"{rng.choice(names.STREETS)} {rng.choice(names.STREET_SUFFIXES)}",
        city=city,
        state=state,
        zip_code=zip_prefix + "".join(rng.choices("0123456789", k=3)),
        split=split,
    )


def _all_names() -> list[tuple[str, str, bool]]:
    """(first, last, female) for every name the lists can make."""
    first_names = [(n, True) for n in names.FEMALE_FIRST_NAMES] + [(n, False) for n in names.MALE_FIRST_NAMES]
    return [(first, last, female) for first, female in first_names for last in names.SURNAMES if first != last]


def make_bios_world(
    n_forget: int = 50, n_retain: int = 50, n_holdout: int = 25, *, seed: int = 0, n_sums: int = 40, n_bios: int = 6
) -> BiosWorld:
    """Generate the world deterministically from `seed`.

    Examples:
        >>> world = make_bios_world(seed=0)
        >>> len(world.people_in("forget")), len(world.people_in("holdout"))
        (50, 25)
        >>> make_bios_world(seed=0).forget == world.forget
        True
    """
    counts = {"forget": n_forget, "retain": n_retain, "holdout": n_holdout}
    if min(counts.values()) < 0 or n_forget + n_retain == 0:
        raise ValueError(f"need non-negative split sizes with some trained people, got {counts}")
    rng = random.Random(seed)
    all_names = _all_names()
    total = sum(counts.values())
    if total > len(all_names):
        raise ValueError(f"asked for {total} people but the name lists give only {len(all_names)} distinct names")
    chosen = rng.sample(all_names, total)
    splits = [s for s in SPLITS for _ in range(counts[s])]
    people = [_draw_person(rng, first, last, female, split) for (first, last, female), split in zip(chosen, splits)]
    return BiosWorld(people=people, general_knowledge=make_general_knowledge(n_sums=n_sums, seed=seed), seed=seed,
                     n_bios=n_bios, n_sums=n_sums)
