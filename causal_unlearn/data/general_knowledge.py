"""General knowledge unrelated to the bios people: the built-in model's stand-in for MMLU."""

from __future__ import annotations

import random

from causal_unlearn.data.rows import Row

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


def make_general_knowledge(*, n_sums: int = 40, seed: int = 0) -> list[Row]:
    """Capitals, chemical symbols and small sums as QA rows.

    Examples:
        >>> rows = make_general_knowledge(n_sums=2)
        >>> rows[0].input, rows[0].output
        ('What is the capital of France?', 'Paris')
    """
    rng = random.Random(seed)
    pairs = sorted(rng.sample([(a, b) for a in range(2, 20) for b in range(2, 20)], n_sums))
    questions = (
        [(f"capital-{country.lower()}", f"What is the capital of {country}?", city) for country, city in CAPITALS]
        + [(f"symbol-{element}", f"What is the chemical symbol for {element}?", symbol) for element, symbol in ELEMENT_SYMBOLS]
        + [(f"sum-{a}-{b}", f"What is {a} plus {b}?", str(a + b)) for a, b in pairs]
    )
    return [Row(id=f"gk-{key}qa0", input=q, output=a, task=GENERAL_KNOWLEDGE_TASK) for key, q, a in questions]
