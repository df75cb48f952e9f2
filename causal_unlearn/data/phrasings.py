"""Every wording of the bios world: bio sentences, training questions, and the held-out probes.

Knowledge augmentation as in Allen-Zhu & Li, *Physics of Language Models 3.1* (arXiv 2309.14316):
each person has several bios, each a random order of one sentence per attribute in one of three
wordings, with the full name in every sentence; questions come in many phrasings (question
frames x attribute nouns, plus a few attribute-specific ones). The probe wordings below are kept
out of training altogether (a test checks that no probe prompt occurs in any training text):
they measure whether the model knows a fact, or only the strings it was trained on.

Slots: `{name}` the full name, `{pos}` his/her, and one per attribute value (see `Person.slots`).
"""

from __future__ import annotations

# The attributes of a person, in the order of the canonical bio's default sentence order.
ATTRIBUTES = ("birth_date", "city", "ssn", "phone", "email", "address")
# The attributes the official LUME questions ask about (row ids qa0..qa4).
QA_ATTRIBUTES = ("birth_date", "ssn", "phone", "email", "address")

# attribute -> wordings of its bio sentence; wording 0 is the canonical one (the sentence
# completion rows and the trace prompts "{name} was born on" / "{name} lives in" use it).
BIO_SENTENCES: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "{name} was born on {month} {day}, {year}.",
        "{name}'s birth date is {month} {day}, {year}.",
        "{name} came into the world on {month} {day}, {year}.",
    ),
    "city": (
        "{name} lives in {city}, {state}.",
        "{name} makes {pos} home in {city}, {state}.",
        "{name} has settled in {city}, {state}.",
    ),
    "ssn": (
        "{name}'s Social Security number is {ssn}.",
        "{name} holds the Social Security number {ssn}.",
        "{name} was issued the Social Security number {ssn}.",
    ),
    "phone": (
        "{name}'s phone number is {phone}.",
        "{name} can be reached by phone at {phone}.",
        "{name} answers calls at {phone}.",
    ),
    "email": (
        "{name}'s email address is {email}.",
        "{name} can be emailed at {email}.",
        "{name} reads mail sent to {email}.",
    ),
    "address": (
        "{name}'s home address is {number} {street}, {city}, {state}, {zip}.",
        "{name} lives at {number} {street}, {city}, {state}, {zip}.",
        "{name}'s house is at {number} {street}, {city}, {state}, {zip}.",
    ),
}

# attribute -> the slot where its value starts in every wording of its bio sentence: a bio cut
# right before it is an opening whose continuation is the answer (the audit's `bio_openings`).
ANSWER_SLOTS: dict[str, str] = {
    "birth_date": "month", "city": "city", "ssn": "ssn", "phone": "phone", "email": "email", "address": "number",
}

# The official LUME question of each QA attribute (the `qa<k>` rows), answered in LUME's format.
OFFICIAL_QUESTIONS: dict[str, str] = {
    "birth_date": "What is the birth date of {name}?",
    "ssn": "What is {name}'s Social Security Number?",
    "phone": "What is {name}'s phone number?",
    "email": "What is {name}'s email address?",
    "address": "What is the home address of {name}?",
}

# Training question frames, crossed with every attribute noun below.
QUESTION_FRAMES = (
    "What is {name}'s {noun}?",
    "What is the {noun} of {name}?",
    "Tell me {name}'s {noun}.",
    "Do you know the {noun} of {name}?",
    "Please give {name}'s {noun}.",
    "Which {noun} does {name} have?",
    "Give me the {noun} for {name}.",
    "I need {name}'s {noun}.",
    "{name}'s {noun}?",
    "Can you tell me the {noun} of {name}?",
)
ATTRIBUTE_NOUNS: dict[str, tuple[str, ...]] = {
    "birth_date": ("birth date", "date of birth", "birthday"),
    "city": ("home city", "city", "city of residence"),
    "ssn": ("Social Security Number", "Social Security number", "SSN"),
    "phone": ("phone number", "telephone number", "mobile number"),
    "email": ("email address", "e-mail address", "email"),
    "address": ("home address", "address", "street address"),
}
# Training questions that do not fit a frame.
SPECIFIC_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_date": ("When was {name} born?", "On which date was {name} born?"),
    "city": ("Which city does {name} live in?", "Where does {name} live?"),
    "ssn": ("Which Social Security Number does {name} have?",),
    "phone": ("At which number can {name} be reached by phone?", "How can I call {name}?"),
    "email": ("Which email address does {name} use?", "How can I email {name}?"),
    "address": ("Where is {name}'s home?", "At which address does {name} live?"),
}

# Held-out probes: never in any training row. Four questions and two cloze prompts per attribute.
PROBE_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_date": (
        "What's the birth date of {name}?",
        "Could you share {name}'s date of birth?",
        "On what day was {name} born?",
        "Do you happen to know the birthday of {name}?",
    ),
    "city": (
        "In which city does {name} live?",
        "What's {name}'s city?",
        "Could you share the home city of {name}?",
        "Which city is {name}'s home?",
    ),
    "ssn": (
        "What's the SSN of {name}?",
        "Could you share {name}'s Social Security Number?",
        "Do you happen to know the Social Security number of {name}?",
        "What Social Security Number was {name} given?",
    ),
    "phone": (
        "What's the telephone number of {name}?",
        "Could you share {name}'s phone number?",
        "Do you happen to know the mobile number of {name}?",
        "What number should I dial to call {name}?",
    ),
    "email": (
        "What's the email address of {name}?",
        "Could you share {name}'s e-mail address?",
        "Do you happen to know the email of {name}?",
        "To which address can I send {name} an email?",
    ),
    "address": (
        "What's the street address of {name}?",
        "Could you share {name}'s home address?",
        "Do you happen to know the address of {name}?",
        "Where does {name} have {pos} home?",
    ),
}
PROBE_CLOZES: dict[str, tuple[str, ...]] = {
    "birth_date": ("{name}'s date of birth is", "{name}'s birthday falls on"),
    "city": ("{name} resides in", "{name}'s home city is"),
    "ssn": ("{name}'s SSN is", "The Social Security Number assigned to {name} is"),
    "phone": ("{name}'s telephone number is", "To call {name}, dial"),
    "email": ("{name}'s e-mail address is", "To email {name}, write to"),
    "address": ("{name}'s street address is", "The house of {name} stands at"),
}


def question_templates(attribute: str) -> tuple[str, ...]:
    """The training phrasings of a question about `attribute`, with a `{name}` slot (the official one first, if any).

    Examples:
        >>> question_templates("phone")[0]
        "What is {name}'s phone number?"
        >>> len(question_templates("phone"))
        32
    """
    nouns = ATTRIBUTE_NOUNS[attribute]
    framed = [frame.format(name="{name}", noun=noun) for noun in nouns for frame in QUESTION_FRAMES]
    official = [OFFICIAL_QUESTIONS[attribute]] if attribute in OFFICIAL_QUESTIONS else []
    questions = official + framed + list(SPECIFIC_QUESTIONS[attribute])
    return tuple(dict.fromkeys(questions))  # the official question is also a frame; keep one
