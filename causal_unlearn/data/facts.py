"""A fact to trace: a prompt, the subject inside it, and the answer the model should give."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TraceFact:
    """(prompt, subject, answer) as in ROME's known-facts file, plus where it came from.

    `answer` is the exact continuation text (leading space included); tracing uses its first
    token.

    Examples:
        >>> fact = TraceFact("Ann Teal lives in", "Ann Teal", " Denver", attribute="city")
        >>> fact.prompt.index(fact.subject)
        0
    """

    prompt: str
    subject: str
    answer: str
    attribute: str = ""
    person_id: str = ""
    split: str = ""
    held_out: bool = False  # worded apart from every training text

    def __post_init__(self) -> None:
        if self.subject not in self.prompt:
            raise ValueError(f"subject {self.subject!r} does not occur in prompt {self.prompt!r}")
        if not self.answer:
            raise ValueError(f"fact {self.prompt!r} has an empty answer")

    def to_dict(self) -> dict[str, str | bool]:
        return asdict(self)
