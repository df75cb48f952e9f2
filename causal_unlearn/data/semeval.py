"""Reading SemEval-2025 Task 4 (LUME) files: forget/retain splits in jsonl or parquet."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from causal_unlearn.data.files import jsonl_records
from causal_unlearn.data.rows import REQUIRED_FIELDS, Row, RowKind, row_kind, select

_SUFFIXES = (".jsonl", ".parquet")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")  # hub shards: forget_train-00000-of-00001.parquet


class SemEvalFormatError(ValueError):
    """A file that is not in the SemEval-2025 Task 4 row format; the message names file and line."""


@dataclass
class SemEvalData:
    """Rows by split ("forget", "retain", ...), with selection by task and kind.

    Examples:
        >>> from causal_unlearn import make_bios_world
        >>> import tempfile
        >>> data = load_semeval(make_bios_world().save(tempfile.mkdtemp()))
        >>> len(data.forget), len(data.select("retain", task="Task2", kind="qa"))
        (300, 250)
    """

    splits: dict[str, list[Row]]

    @property
    def forget(self) -> list[Row]:
        return self._rows_of("forget")

    @property
    def retain(self) -> list[Row]:
        return self._rows_of("retain")

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for rows in self.splits.values() for r in rows})

    def select(self, split: str, *, task: str | None = None, kind: RowKind | None = None) -> list[Row]:
        return select(self._rows_of(split), task=task, kind=kind)

    def counts(self) -> dict[tuple[str, str, str], int]:
        """Number of rows per (split, task, kind)."""
        return dict(sorted(Counter((s, r.task, r.kind) for s, rows in self.splits.items() for r in rows).items()))

    def _rows_of(self, split: str) -> list[Row]:
        """`split` itself, or every split whose name starts with it (forget_train, forget_validation)."""
        if split in self.splits:
            return self.splits[split]
        matching = [name for name in self.splits if name.startswith(split)]
        if not matching:
            raise KeyError(f"no {split!r} split; this data has {sorted(self.splits)}")
        return [row for name in matching for row in self.splits[name]]


def load_semeval(path_or_dir: str | Path, *, splits: Iterable[str] = ("forget", "retain", "holdout")) -> SemEvalData:
    """Read SemEval-2025 Task 4 rows from a folder (files named after their split) or one file.

    A folder is searched for `*.jsonl` and `*.parquet` files whose names start with one of
    `splits`; a single file becomes the split named by its stem. Every row must have string
    fields id, input, output, task, and an id ending in sc<N> or qa<N>.

    Examples:
        >>> import tempfile
        >>> from causal_unlearn import make_bios_world
        >>> folder = make_bios_world().save(tempfile.mkdtemp())  # forget.jsonl, retain.jsonl, ...
        >>> data = load_semeval(folder, splits=("forget",))
        >>> list(data.splits), data.forget[0].task
        (['forget'], 'Task2')
    """
    path = Path(path_or_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no SemEval data at {path}: give a folder with forget/retain files or one .jsonl/.parquet file")
    if path.is_file():
        files = [path]
    else:
        wanted = tuple(splits)
        files = sorted(f for f in path.iterdir() if f.suffix in _SUFFIXES and f.name.startswith(wanted))
        if not files:
            raise FileNotFoundError(
                f"{path} has no .jsonl or .parquet file whose name starts with one of {list(wanted)} "
                "(expected e.g. forget.jsonl and retain.jsonl)"
            )
    loaded: dict[str, list[Row]] = {}
    for file in files:
        loaded.setdefault(_SHARD.sub("", file.stem), []).extend(read_rows(file))
    empty = [split for split, rows in loaded.items() if not rows]
    if empty:
        raise SemEvalFormatError(f"{path}: the {empty[0]} split has no rows (its file is empty); every split needs "
                                 "rows with fields id, input, output, task")
    return SemEvalData(loaded)


def read_rows(file: str | Path) -> list[Row]:
    """The validated rows of one .jsonl or .parquet file.

    Examples:
        >>> import json, pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "forget.jsonl"
        >>> _ = file.write_text(json.dumps(dict(id="p1qa0", input="Where does Ann live?", output="Denver", task="Task2")))
        >>> read_rows(file)[0].output
        'Denver'
    """
    file = Path(file)
    if file.suffix == ".jsonl":
        records = jsonl_records(file, SemEvalFormatError)
    elif file.suffix == ".parquet":
        records = _parquet_records(file)
    else:
        raise SemEvalFormatError(f"{file}: unsupported file type {file.suffix!r}; use .jsonl or .parquet")
    return [_to_row(record, f"{file}:{where}") for where, record in records]


def _parquet_records(file: Path) -> Iterable[tuple[str, Any]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except (pyarrow.ArrowException, OSError) as error:
        raise SemEvalFormatError(f"{file} is not a readable Parquet file ({str(error).splitlines()[0][:160]}); write it "
                                 "again, or use .jsonl") from error
    for index, record in enumerate(table.to_pylist()):
        yield f"row {index}", record


def _to_row(record: Any, where: str) -> Row:
    if not isinstance(record, dict):
        raise SemEvalFormatError(f"{where}: expected an object with fields {list(REQUIRED_FIELDS)}, got {type(record).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise SemEvalFormatError(f"{where}: row is missing field(s) {missing}; every row needs {list(REQUIRED_FIELDS)}")
    wrong = [f for f in REQUIRED_FIELDS if not isinstance(record[f], str)]
    if wrong:
        raise SemEvalFormatError(f"{where}: field(s) {wrong} must be strings")
    try:
        row_kind(record["id"])
    except ValueError as error:
        raise SemEvalFormatError(f"{where}: {error}") from None
    return Row(**{f: record[f] for f in REQUIRED_FIELDS})
