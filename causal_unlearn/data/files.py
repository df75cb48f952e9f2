"""JSON Lines files: one JSON object per line, read with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")


def jsonl_records(file: str | Path, error: type[ValueError] = ValueError) -> Iterable[tuple[str, Any]]:
    """("line N", the parsed object) for each non-blank line of `file`; a line that is not JSON,
    or a file that is not UTF-8 text, raises `error` naming the file and line."""
    file = Path(file)
    with open(file, encoding="utf-8") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as failure:
            raise error(f"{file} is not UTF-8 text ({failure.reason} at byte {failure.start}); a .jsonl file "
                        "holds one JSON object per line") from failure
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as failure:
            raise error(f"{file}: line {number} is not valid JSON ({failure.msg})") from None


def read_jsonl(file: str | Path, make: Callable[..., T], what: str) -> list[T]:
    """`make(**record)` for each object of a .jsonl file; a record `make` refuses raises a
    ValueError naming the file, the line and the fields a `what` takes.

    Examples:
        >>> import pathlib, tempfile
        >>> from causal_unlearn.data.facts import TraceFact
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "facts.jsonl"
        >>> _ = file.write_text('{"prompt": "Ann Teal lives in", "subject": "Ann Teal", "answer": " Denver"}')
        >>> read_jsonl(file, TraceFact, "trace fact")[0].answer
        ' Denver'
    """
    items = []
    for where, record in jsonl_records(file):
        if not isinstance(record, dict):
            raise ValueError(f"{file}: {where} holds a {type(record).__name__}; each line is one {what} as a JSON object")
        try:
            items.append(make(**record))
        except (TypeError, ValueError) as failure:
            raise ValueError(f"{file}: {where} is not a {what}: {failure}") from None
    if not items:
        raise ValueError(f"{file} holds no {what}; write one JSON object per line")
    return items
