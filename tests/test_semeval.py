import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from causal_unlearn import load_semeval
from causal_unlearn.data.semeval import SemEvalFormatError, read_rows
from conftest import LUME

EXPECTED_LUME = {
    ("forget", "Task1", "qa"): 243, ("forget", "Task1", "sc"): 243,
    ("forget", "Task2", "qa"): 1250, ("forget", "Task2", "sc"): 250,
    ("forget", "Task3", "qa"): 373, ("forget", "Task3", "sc"): 373,
    ("retain", "Task1", "qa"): 246, ("retain", "Task1", "sc"): 246,
    ("retain", "Task2", "qa"): 1250, ("retain", "Task2", "sc"): 250,
    ("retain", "Task3", "qa"): 371, ("retain", "Task3", "sc"): 371,
}


def test_real_lume_files():
    data = load_semeval(LUME)
    assert len(data.forget) == 2732 and len(data.retain) == 2734
    assert data.tasks == ["Task1", "Task2", "Task3"]
    assert data.counts() == EXPECTED_LUME
    assert len(data.select("forget", task="Task2", kind="qa")) == 1250
    first = json.loads(open(LUME / "forget.jsonl").readline())
    assert data.forget[0].to_dict() == first


def test_parquet_equals_jsonl(tmp_path):
    rows = read_rows(LUME / "retain.jsonl")
    pq.write_table(pa.Table.from_pylist([r.to_dict() for r in rows]), tmp_path / "retain_train-00000-of-00001.parquet")
    data = load_semeval(tmp_path)
    assert list(data.splits) == ["retain_train"]
    assert data.retain == rows


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_field_names_file_and_line(tmp_path):
    good = json.dumps({"id": "aqa0", "input": "q", "output": "a", "task": "Task2"})
    bad = json.dumps({"id": "aqa1", "input": "q", "task": "Task2"})
    _write(tmp_path / "forget.jsonl", [good, bad])
    with pytest.raises(SemEvalFormatError, match=r"forget.jsonl:line 2: row is missing field\(s\) \['output'\]"):
        load_semeval(tmp_path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"id": "a"', "line 1 is not valid JSON"),
        ('["a"]', "expected an object"),
        ('{"id": "a1", "input": "q", "output": "a", "task": "T"}', "does not end with 'sc<N>' or 'qa<N>'"),
        ('{"id": "aqa1", "input": 3, "output": "a", "task": "T"}', r"\['input'\] must be strings"),
    ],
)
def test_malformed_rows(tmp_path, line, message):
    with pytest.raises(SemEvalFormatError, match=message):
        read_rows(_write(tmp_path / "forget.jsonl", [line]))


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SemEval data"):
        load_semeval(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="forget.jsonl and retain.jsonl"):
        load_semeval(tmp_path)
    with pytest.raises(SemEvalFormatError, match="unsupported file type"):
        read_rows(_write(tmp_path / "forget.csv", ["id,input"]))
    data = load_semeval(LUME / "forget.jsonl")
    with pytest.raises(KeyError, match="no 'retain' split"):
        data.retain
