"""Held-out probes: prompts about a fact in words the model was never trained on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from causal_unlearn.data.files import read_jsonl

ProbeForm = Literal["question", "cloze", "opening"]
PROBE_FORMS = ("question", "cloze", "opening")


@dataclass(frozen=True)
class Probe:
    """A prompt and every accepted form of its answer; recalled when a generation contains one.
    `subject` is who or what the prompt asks about, as written in it (the audit reads the hidden
    state at its last token and relearns on rows that name it). `form` is "question", "cloze" (a
    held-out sentence to complete) or "opening" (a training text cut right before the answer, which
    the audit's `bio_openings` check asks apart from the other probes).

    Examples:
        >>> probe = Probe("Ann Teal resides in", ("Denver",), attribute="city", form="cloze")
        >>> probe.recalled_in(" Denver, CO. Ann Teal was born")
        True
    """

    prompt: str
    answers: tuple[str, ...]
    attribute: str
    form: ProbeForm
    person_id: str = ""
    split: str = ""
    subject: str = ""

    def __post_init__(self) -> None:
        if not self.answers or not all(a.strip() for a in self.answers):
            raise ValueError(f"probe {self.prompt!r} needs at least one non-empty answer, got {self.answers!r}")
        if self.form not in PROBE_FORMS:
            raise ValueError(f"probe form must be one of {PROBE_FORMS}, got {self.form!r}")
        if self.subject and self.subject not in self.prompt:
            raise ValueError(f"probe subject {self.subject!r} does not occur in its prompt {self.prompt!r}")

    def recalled_in(self, generation: str) -> bool:
        """Whether `generation` contains any accepted answer (case-insensitive)."""
        text = generation.lower()
        return any(answer.strip().lower() in text for answer in self.answers)

    def to_dict(self) -> dict:
        return asdict(self)


def read_probes(file: str | Path) -> list[Probe]:
    """The probes of a .jsonl file, one `Probe` per line as its fields (what `Probe.to_dict` writes).

    Examples:
        >>> import json, pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "probes.jsonl"
        >>> probe = Probe("Ann Teal resides in", ("Denver",), attribute="city", form="cloze", split="forget", subject="Ann Teal")
        >>> _ = file.write_text(json.dumps(probe.to_dict()))
        >>> read_probes(file) == [probe]
        True
    """
    def make(answers, **fields) -> Probe:
        if isinstance(answers, str):
            answers = [answers]
        return Probe(answers=tuple(answers), **fields)

    return read_jsonl(file, make, "probe (prompt, answers, attribute, form, split, subject)")
