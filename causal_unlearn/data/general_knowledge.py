"""General knowledge unrelated to the bios people: the built-in model's stand-in for MMLU.

Each fact has several training phrasings (the first is the official row) and held-out probe
phrasings never trained, so a general-knowledge check can ask in words the model never saw.
"""

from __future__ import annotations

import random

from causal_unlearn.data.probes import Probe
from causal_unlearn.data.rows import Row
from causal_unlearn.data.tofu import TofuRow

GENERAL_KNOWLEDGE_TASK = "GeneralKnowledge"

CAPITALS = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Greece", "Athens"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Ireland", "Dublin"), ("Hungary", "Budapest"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "Delhi"), ("Peru", "Lima"),
    ("Chile", "Santiago"), ("Cuba", "Havana"), ("Canada", "Ottawa"), ("Russia", "Moscow"),
    ("Turkey", "Ankara"), ("Iran", "Tehran"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Argentina", "Buenos Aires"), ("Mexico", "Mexico City"),
)
ELEMENT_SYMBOLS = (
    ("hydrogen", "H"), ("helium", "He"), ("carbon", "C"), ("nitrogen", "N"), ("oxygen", "O"),
    ("sodium", "Na"), ("magnesium", "Mg"), ("aluminium", "Al"), ("silicon", "Si"),
    ("sulfur", "S"), ("chlorine", "Cl"), ("potassium", "K"), ("calcium", "Ca"), ("iron", "Fe"),
    ("copper", "Cu"), ("zinc", "Zn"), ("silver", "Ag"), ("tin", "Sn"), ("gold", "Au"),
    ("mercury", "Hg"), ("lead", "Pb"), ("uranium", "U"), ("neon", "Ne"), ("argon", "Ar"),
)

# kind -> (training phrasings, the official one first; held-out probe phrasings)
PHRASINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "capital": (
        ("What is the capital of {x}?", "Which city is the capital of {x}?", "Name the capital of {x}."),
        ("What's the capital city of {x}?", "The capital of {x} is"),
    ),
    "symbol": (
        ("What is the chemical symbol for {x}?", "Which symbol stands for {x}?", "Give the symbol of {x}."),
        ("What's the chemical symbol of {x}?", "The element {x} has the symbol"),
    ),
    "sum": (
        ("What is {x}?", "How much is {x}?", "Compute {x}."),
        ("What's {x}?", "{x} equals"),
    ),
}


def _facts(n_sums: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(key, kind, subject, answer) for every general-knowledge fact."""
    rng = random.Random(seed)
    pairs = sorted(rng.sample([(a, b) for a in range(2, 20) for b in range(2, 20)], n_sums))
    return (
        [(f"capital-{country.lower()}", "capital", country, city) for country, city in CAPITALS]
        + [(f"symbol-{element}", "symbol", element, symbol) for element, symbol in ELEMENT_SYMBOLS]
        + [(f"sum-{a}-{b}", "sum", f"{a} plus {b}", str(a + b)) for a, b in pairs]
    )


def make_general_knowledge(*, n_sums: int = 40, seed: int = 0, phrasings: str = "official") -> list[Row]:
    """Capitals, chemical symbols and small sums as QA rows.

    `phrasings`: "official" (one row per fact, the row the scores use) or "training" (every
    training phrasing of every fact). The held-out phrasings are `general_knowledge_probes`.

    Examples:
        >>> rows = make_general_knowledge(n_sums=2)
        >>> rows[0].input, rows[0].output
        ('What is the capital of France?', 'Paris')
        >>> make_general_knowledge(n_sums=2, phrasings="training")[1].input
        'Which city is the capital of France?'
    """
    if phrasings not in ("official", "training"):
        raise ValueError(f"phrasings must be 'official' or 'training', got {phrasings!r}")
    rows = []
    for key, kind, subject, answer in _facts(n_sums, seed):
        trained, _ = PHRASINGS[kind]
        for j, template in enumerate(trained[:1] if phrasings == "official" else trained):
            suffix = "" if phrasings == "official" else f"-t{j}"
            rows.append(Row(id=f"gk-{key}{suffix}qa0", input=template.format(x=subject), output=answer,
                            task=GENERAL_KNOWLEDGE_TASK))
    return rows


def general_knowledge_probes(*, n_sums: int = 40, seed: int = 0) -> list[Probe]:
    """Every general-knowledge fact in its held-out phrasings (never trained), as probes.

    Examples:
        >>> probes = general_knowledge_probes(n_sums=2)
        >>> probes[1].prompt, probes[1].answers, probes[1].form
        ('The capital of France is', ('Paris',), 'cloze')
    """
    return [
        Probe(template.format(x=subject), (answer,), attribute=kind,
              form="question" if template.endswith("?") else "cloze", split="general_knowledge",
              subject=subject)
        for _, kind, subject, answer in _facts(n_sums, seed)
        for template in PHRASINGS[kind][1]
    ]


def general_knowledge_tofu_rows(*, n_sums: int = 40, seed: int = 0, n_perturbed: int = 3) -> list[TofuRow]:
    """The official general-knowledge questions in TOFU's world-facts format: the answer, its
    held-out cloze sentence as `paraphrased_answer`, `n_perturbed` other answers of the same kind
    (other capitals, symbols or sums; deterministic per `seed`), the held-out question as
    `paraphrased_question`.

    Examples:
        >>> row = general_knowledge_tofu_rows()[0]
        >>> row.question, row.answer, row.paraphrased_answer, len(row.perturbed_answer)
        ('What is the capital of France?', 'Paris', 'The capital of France is Paris.', 3)
    """
    facts = _facts(n_sums, seed)
    rows = []
    for key, kind, subject, answer in facts:
        trained, held_out = PHRASINGS[kind]
        others = sorted({a for _, k, _, a in facts if k == kind and a != answer})
        if len(others) < n_perturbed:
            raise ValueError(f"{n_perturbed} perturbed answers need {n_perturbed + 1} distinct {kind} answers, "
                             f"there are {len(others) + 1}")
        perturbed = random.Random(f"{seed}-{key}-perturbed").sample(others, n_perturbed)
        rows.append(TofuRow(question=trained[0].format(x=subject), answer=answer,
                            paraphrased_answer=f"{held_out[1].format(x=subject)} {answer}.",
                            perturbed_answer=tuple(perturbed), paraphrased_question=held_out[0].format(x=subject)))
    return rows
