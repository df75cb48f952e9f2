import json
import subprocess
import sys

import pytest

from causal_unlearn.cli import main


def test_demo_prints_what_the_model_knows(capsys):
    assert main(["demo", "--device", "cpu", "--max-new-tokens", "32", "--json"]) == 0
    out = capsys.readouterr().out
    assert "olmo-tiny-bios (olmo, 8 layers" in out
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report) >= {"forget_qa_exact_match", "retain_qa_exact_match", "holdout_qa_exact_match",
                           "general_knowledge_accuracy"}
    assert report["forget_qa_exact_match"] >= 0.95 and report["holdout_qa_exact_match"] <= 0.05


def test_help_reads_well():
    out = subprocess.run([sys.executable, "-m", "causal_unlearn.cli", "demo", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "built-in name, local folder or hub id" in out


def test_bad_model_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no model folder"):
        main(["demo", "--model", "./does-not-exist"])
