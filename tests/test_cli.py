import json
import os
import subprocess
import sys

import pytest
import torch

import causal_unlearn as cu
from browser import render
from causal_unlearn.cli import main


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    """A quick demo run (fewer facts, one epoch): the same code path as `causal-unlearn demo`."""
    folder = tmp_path_factory.mktemp("report")
    assert main(["demo", "--device", "cpu", "--out", str(folder), "--max-facts", "20", "--epochs", "1",
                 "--samples", "1", "--max-new-tokens", "32"]) == 0
    return folder


def test_demo_writes_the_report_folder(demo_report):
    scores = json.loads((demo_report / "scores.json").read_text())
    assert scores["layers"] == [0, 7]
    assert scores["before"]["Task2/forget_knowledge"] == 1.0
    assert scores["after"]["Task2/forget_knowledge"] < scores["before"]["Task2/forget_knowledge"]
    for name in ("trace", "average_effects", "unlearning", "before_after"):
        assert (demo_report / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    edited = cu.load_model(str(demo_report / "model"))
    original = cu.load_model("olmo-tiny-bios")
    moved = {n for n, p in edited.model.named_parameters() if not torch.equal(p, original.model.get_parameter(n))}
    assert moved and all(n.startswith(("model.layers.0.mlp", "model.layers.7.mlp")) for n in moved)


def test_demo_report_renders_every_figure_in_chromium_without_console_messages(demo_report):
    page = render(demo_report / "report.html")
    assert page.console == []
    assert page.figure_divs == 4 and page.plots == 4
    assert "Official SemEval-2025 Task 4 scores" in page.dom


def test_the_render_check_sees_errors_and_missing_plots(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><div class="plotly-graph-div"></div><script>console.error("bad"); '
                      "missingFunction();</script></body></html>")
    page = render(broken)
    assert len(page.console) == 2 and "missingFunction is not defined" in page.console[1]
    assert page.figure_divs == 1 and page.plots == 0


def test_trace_command_prints_saves_and_draws(tmp_path, capsys):
    out, figure = tmp_path / "trace.safetensors", tmp_path / "trace.html"
    assert main(["trace", "--prompt", "Otto Russet lives in", "--subject", "Otto Russet", "--kinds", "mlp",
                 "--samples", "2", "--window", "1", "--out", str(out), "--figure", str(figure)]) == 0
    printed = capsys.readouterr().out
    saved = cu.TraceResult.load(out)
    assert f"-> ' Houston': clean {saved.high:.4f}" in printed
    assert saved.kinds == ["mlp"] and saved.settings.window == 1
    assert figure.read_text().count("plotly-graph-div") >= 1


def test_unlearn_then_evaluate_commands_on_row_files(tmp_path, world, capsys):
    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    forget.write_text("\n".join(json.dumps(r.to_dict()) for r in world.forget[:8]))
    retain.write_text("\n".join(json.dumps(r.to_dict()) for r in world.retain[:8]))
    edited = tmp_path / "edited"
    assert main(["unlearn", "--forget", str(forget), "--retain", str(retain), "--layers", "7", "--epochs", "1",
                 "--out", str(edited)]) == 0
    record = json.loads((edited / "unlearning.json").read_text())
    assert record["layers"] == [7] and record["settings"]["n_forget"] == 8
    assert (edited / "unlearning.html").is_file()
    scores_file = tmp_path / "scores.json"
    assert main(["evaluate", "--model", str(edited), "--forget", str(forget), "--retain", str(retain),
                 "--members", str(forget), "--nonmembers", str(retain), "--max-new-tokens", "16",
                 "--out", str(scores_file)]) == 0
    scores = json.loads(scores_file.read_text())
    expected = cu.evaluate(cu.load_model(str(edited)), world.forget[:8], world.retain[:8], members=world.forget[:8],
                           nonmembers=world.retain[:8], max_new_tokens=16, progress=False).to_dict()
    assert scores == expected  # JSON round-trips floats exactly


def test_unlearn_with_own_rows_needs_layers(tmp_path, world):
    forget = tmp_path / "forget.jsonl"
    forget.write_text(json.dumps(world.forget[0].to_dict()))
    with pytest.raises(SystemExit, match="give --layers"):
        main(["unlearn", "--forget", str(forget), "--out", str(tmp_path / "x")])


def test_knowledge_prints_what_the_model_knows(capsys):
    assert main(["knowledge", "--device", "cpu", "--max-new-tokens", "32", "--json"]) == 0
    out = capsys.readouterr().out
    assert "olmo-tiny-bios (olmo, 8 layers" in out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["forget_qa_exact_match"] >= 0.95 and report["holdout_qa_exact_match"] <= 0.05


@pytest.mark.parametrize("command", ["demo", "trace", "unlearn", "evaluate", "knowledge"])
def test_help_reads_well(command):
    out = subprocess.run([sys.executable, "-m", "causal_unlearn.cli", command, "--help"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    assert "built-in name, local folder or hub id (default: olmo-tiny-bios)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_bad_model_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no model folder"):
        main(["knowledge", "--model", "./does-not-exist"])
