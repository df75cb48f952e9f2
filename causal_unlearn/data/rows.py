"""The SemEval-2025 Task 4 / LUME row: one prompt (`input`), its reference continuation
(`output`), the task it belongs to, and an id whose suffix says sentence completion or QA."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable, Literal

RowKind = Literal["sc", "qa"]

# LUME ids end with "sc<N>" (sentence completion) or "qa<N>" (question answering).
_KIND_SUFFIX = re.compile(r"(sc|qa)(\d+)$")

REQUIRED_FIELDS = ("id", "input", "output", "task")


@dataclass(frozen=True)
class Row:
    """One benchmark row.

    Examples:
        >>> row = Row(id="p7qa2", input="What is Ann Teal's phone number?", output="7216253765", task="Task2")
        >>> row.kind, row.text
        ('qa', "What is Ann Teal's phone number? 7216253765")
    """

    id: str
    input: str
    output: str
    task: str

    @property
    def kind(self) -> RowKind:
        return row_kind(self.id)

    @property
    def text(self) -> str:
        """Prompt and reference joined as the model sees them in training."""
        return f"{self.input} {self.output}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def row_kind(row_id: str) -> RowKind:
    """'sc' or 'qa' from a LUME id; a ValueError for any other id.

    Examples:
        >>> row_kind("6557ba51-a8f9-4bb0-8c1c-8b0f8f1dc1b7sc1"), row_kind("p1qa0")
        ('sc', 'qa')
    """
    match = _KIND_SUFFIX.search(row_id)
    if match is None:
        raise ValueError(
            f"row id {row_id!r} does not end with 'sc<N>' or 'qa<N>', so its kind "
            "(sentence completion or question answering) is unknown"
        )
    return match.group(1)  # type: ignore[return-value]


def select(rows: Iterable[Row], *, task: str | None = None, kind: RowKind | None = None) -> list[Row]:
    """The rows of one task and/or kind.

    Examples:
        >>> rows = [Row("a sc1", "x", "y", "Task1"), Row("b qa0", "q", "a", "Task2")]
        >>> [r.id for r in select(rows, kind="qa")]
        ['b qa0']
    """
    return [r for r in rows if (task is None or r.task == task) and (kind is None or r.kind == kind)]
