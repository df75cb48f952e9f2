"""TOFU- and MUSE-format data: the QA row with paraphrased and perturbed answers that TOFU's
truth ratio reads, and readers for the two benchmarks' released files.

TOFU (locuslab/TOFU) ships JSON Lines files named after their subset (`forget10_perturbed.json`,
`retain_perturbed.json`, `world_facts_perturbed.json`, ...) with the fields `question`, `answer`,
and in the `*_perturbed` subsets `paraphrased_answer`, `paraphrased_question` and
`perturbed_answer` (a list), the field names open-unlearning's `configs/data/datasets/TOFU_*.yaml`
read. MUSE (muse-bench/MUSE-News, MUSE-Books) ships `knowmem` (`question`, `answer`), `verbmem`
(`prompt`, `gt`) and `raw` / `privleak` (`text`) splits as JSON arrays or Parquet.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from causal_unlearn.data.files import jsonl_records
from causal_unlearn.data.rows import Row

_SUFFIXES = (".json", ".jsonl", ".parquet")
_SHARD = re.compile(r"-\d{5}-of-\d{5}$")  # hub shards: forget_qa-00000-of-00001.parquet
MUSE_VERBMEM_TASK = "MUSE-verbmem"


class TofuFormatError(ValueError):
    """A file that is not in the TOFU / MUSE format; the message names the file, the line and the field."""


@dataclass(frozen=True)
class TofuRow:
    """One TOFU question: its answer, a paraphrase of the answer, and wrong answers in the same
    form (`perturbed_answer`); the last three are optional (TOFU's plain subsets and MUSE's
    knowmem have only question and answer).

    Examples:
        >>> row = TofuRow("Where does Ann Teal live?", "Denver", "Ann Teal lives in Denver.",
        ...               ("Ann Teal lives in Austin.", "Ann Teal lives in Boston."))
        >>> row.to_dict()["perturbed_answer"]
        ['Ann Teal lives in Austin.', 'Ann Teal lives in Boston.']
    """

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answer: tuple[str, ...] = ()
    paraphrased_question: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.perturbed_answer, list):  # as JSON gives it
            object.__setattr__(self, "perturbed_answer", tuple(self.perturbed_answer))

    def to_dict(self) -> dict[str, Any]:
        """The row as TOFU writes it (absent optional fields left out)."""
        record = asdict(self)
        record["perturbed_answer"] = list(self.perturbed_answer)
        return {key: value for key, value in record.items() if value not in (None, [])}


_STRING_FIELDS = ("question", "answer", "paraphrased_answer", "paraphrased_question")


def read_tofu(file: str | Path) -> list[TofuRow]:
    """The rows of one TOFU file (.json or .jsonl: JSON Lines or one JSON array; or .parquet).
    Every row needs non-empty string fields `question` and `answer`; `paraphrased_answer` and
    `paraphrased_question` must be non-empty strings where present, `perturbed_answer` a
    non-empty list of non-empty strings. Other fields (TOFU's `option1`..`option4`) are ignored.

    Examples:
        >>> import json, pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "forget01_perturbed.json"
        >>> _ = file.write_text(json.dumps(dict(question="Who?", answer="Ann", paraphrased_answer="It is Ann.",
        ...                                     perturbed_answer=["It is Bob.", "It is Eve."])) + "\\n")
        >>> read_tofu(file)[0].perturbed_answer
        ('It is Bob.', 'It is Eve.')
    """
    file = Path(file)
    return _nonempty(file, [_tofu_row(record, f"{file}: {where}") for where, record in _records(file)])


def read_muse(file: str | Path) -> list[TofuRow] | list[Row] | list[str]:
    """The rows of one MUSE file, by the fields it holds: knowmem (`question`, `answer`) as
    `TofuRow`s; verbmem (`prompt`, `gt`) as sentence-completion `Row`s, which the model reads
    as `prompt + " " + gt`, as open-unlearning's MUSE configs do (`insert_space: True`); raw and
    privleak (`text`) as plain documents.

    Examples:
        >>> import json, pathlib, tempfile
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "forget.json"
        >>> _ = file.write_text(json.dumps([dict(prompt="The mayor said", gt="that the bridge would close.")]))
        >>> row = read_muse(file)[0]
        >>> row.kind, row.text
        ('sc', 'The mayor said that the bridge would close.')
    """
    file = Path(file)
    return _muse_rows(list(_records(file)), str(file))


def _muse_rows(records: list[tuple[str, Any]], source: str) -> list[TofuRow] | list[Row] | list[str]:
    if not records:
        raise TofuFormatError(f"{source} holds no rows; a MUSE file holds question/answer, prompt/gt or text records")
    where, first = records[0]
    _require_object(first, f"{source}: {where}")
    if "question" in first or "answer" in first:
        return [_tofu_row(record, f"{source}: {where}") for where, record in records]
    if "prompt" in first or "gt" in first:
        rows = []
        for index, (where, record) in enumerate(records):
            fields = _strings(record, f"{source}: {where}", required=("prompt", "gt"))
            rows.append(Row(f"verbmem-{index}sc1", fields["prompt"], fields["gt"], MUSE_VERBMEM_TASK))
        return rows
    if "text" in first:
        return [_strings(record, f"{source}: {where}", required=("text",))["text"] for where, record in records]
    raise TofuFormatError(f"{source}: {where} has fields {sorted(first)}; a MUSE row has question and answer "
                          "(knowmem), prompt and gt (verbmem) or text (raw, privleak)")


def load_tofu(source: str | Path, subset: str, *, split: str = "train") -> list[TofuRow]:
    """The rows of TOFU's `subset` ("forget10_perturbed", "retain_perturbed", "real_authors_perturbed",
    "world_facts_perturbed", "holdout10", ...) from a local folder holding its released file
    (`<subset>.json`, `.jsonl` or `.parquet`), or from the hub (e.g. "locuslab/TOFU") through the
    `datasets` package where it is installed.

    Examples:
        >>> import json, pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "forget01.json").write_text(json.dumps(dict(question="Who?", answer="Ann")) + "\\n")
        >>> load_tofu(folder, "forget01")[0].answer
        'Ann'
    """
    path = Path(source).expanduser()
    if path.exists():
        return read_tofu(_find(path, subset, what="TOFU"))
    records = _hub_records(str(source), subset, split)
    return _nonempty(f"{source} ({subset}, {split})",
                     [_tofu_row(record, f"{source} ({subset}, {split}): row {i}") for i, record in enumerate(records)])


def load_muse(source: str | Path, subset: str, split: str) -> list[TofuRow] | list[Row] | list[str]:
    """MUSE's `subset` ("knowmem", "verbmem", "raw", "privleak") and `split` ("forget_qa",
    "retain_qa", "forget", ...) from a local folder laid out as the hub's (`<subset>/<split>.json`
    or `.parquet`; `forget-qa.json` matches `forget_qa`), or from the hub (e.g.
    "muse-bench/MUSE-News") through `datasets` where it is installed. Rows as `read_muse` gives them.

    Examples:
        >>> import json, pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> (folder / "knowmem").mkdir()
        >>> _ = (folder / "knowmem" / "forget_qa.json").write_text(json.dumps([dict(question="Who?", answer="Ann")]))
        >>> load_muse(folder, "knowmem", "forget_qa")[0].question
        'Who?'
    """
    path = Path(source).expanduser()
    if path.exists():
        return read_muse(_find(path / subset if (path / subset).is_dir() else path, split, what="MUSE"))
    label = f"{source} ({subset}, {split})"
    return _muse_rows([(f"row {i}", r) for i, r in enumerate(_hub_records(str(source), subset, split))], label)


def _find(folder: Path, stem: str, *, what: str) -> Path:
    if folder.is_file():
        return folder
    if not folder.is_dir():
        raise FileNotFoundError(f"no {what} data at {folder}")
    wanted = stem.replace("-", "_")
    files = sorted(f for f in folder.iterdir()
                   if f.suffix in _SUFFIXES and _SHARD.sub("", f.stem).replace("-", "_") == wanted)
    if not files:
        present = sorted(f.name for f in folder.iterdir() if f.suffix in _SUFFIXES)
        raise FileNotFoundError(f"{folder} has no {stem}.json, .jsonl or .parquet file (it has {present})")
    return files[0]


def _hub_records(source: str, subset: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{source!r} is not a local folder, and loading from the hub needs the `datasets` package "
                          "(pip install datasets), or download the files and pass their folder") from None
    return list(datasets.load_dataset(source, subset, split=split))


def _records(file: Path) -> Iterable[tuple[str, Any]]:
    """("line N" or "row N", object) for each record of a JSON Lines, JSON array or Parquet file."""
    if not file.is_file():
        raise FileNotFoundError(f"no file at {file}")
    if file.suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(file)
        except (pyarrow.ArrowException, OSError) as error:
            raise TofuFormatError(f"{file} is not a readable Parquet file ({str(error).splitlines()[0][:160]})") from error
        return [(f"row {i}", record) for i, record in enumerate(table.to_pylist())]
    if file.suffix not in _SUFFIXES:
        raise TofuFormatError(f"{file}: unsupported file type {file.suffix!r}; use .json, .jsonl or .parquet")
    try:
        head = file.read_text(encoding="utf-8").lstrip()[:1]
    except UnicodeDecodeError as failure:
        raise TofuFormatError(f"{file} is not UTF-8 text ({failure.reason})") from failure
    if head == "[":
        try:
            items = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as failure:
            raise TofuFormatError(f"{file}: line {failure.lineno} is not valid JSON ({failure.msg})") from None
        return [(f"item {i}", item) for i, item in enumerate(items)]
    return list(jsonl_records(file, TofuFormatError))


def _require_object(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise TofuFormatError(f"{where} holds a {type(record).__name__}; each row is a JSON object")


def _strings(record: Any, where: str, *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, str]:
    _require_object(record, where)
    missing = [name for name in required if name not in record]
    if missing:
        raise TofuFormatError(f"{where} has no field {missing[0]!r}; every row needs {list(required)}")
    fields = {}
    for name in (*required, *(n for n in optional if record.get(n) is not None)):
        value = record[name]
        if not isinstance(value, str):
            raise TofuFormatError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise TofuFormatError(f"{where}: field {name!r} is empty")
        fields[name] = value
    return fields


def _tofu_row(record: Any, where: str) -> TofuRow:
    fields = _strings(record, where, required=("question", "answer"), optional=_STRING_FIELDS[2:])
    perturbed = record.get("perturbed_answer")
    if perturbed is not None:
        if not isinstance(perturbed, list) or not perturbed:
            raise TofuFormatError(f"{where}: field 'perturbed_answer' must be a non-empty list of strings, "
                                  f"got {type(perturbed).__name__} {perturbed!r:.60}")
        for i, value in enumerate(perturbed):
            if not isinstance(value, str) or not value.strip():
                raise TofuFormatError(f"{where}: field 'perturbed_answer' item {i} must be a non-empty string, "
                                      f"got {value!r:.60}")
    return TofuRow(**fields, perturbed_answer=tuple(perturbed or ()))


def _nonempty(source: Any, rows: list) -> list:
    if not rows:
        raise TofuFormatError(f"{source} holds no rows; a TOFU file holds one JSON object per line "
                              "with fields question and answer")
    return rows
