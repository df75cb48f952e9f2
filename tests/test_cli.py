import json
import subprocess
import sys

import pytest

import causal_unlearn as cu
from reference_scoring import official_task_scores
from causal_unlearn.cli import main


def test_demo_command_runs_the_pipeline_with_its_options(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("causal_unlearn.demo.run_demo", lambda out, **options: calls.append((out, options)))
    assert main(["demo", "--out", str(tmp_path), "--max-facts", "20", "--epochs", "1", "--no-export"]) == 0
    assert calls == [(str(tmp_path), dict(model="olmo-tiny-bios", device=None, max_facts=20, samples=2, epochs=1,
                                          max_new_tokens=64, export_figures=False))]


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
    lm = cu.load_model(str(edited))
    expected = official_task_scores(lm.model, lm.tokenizer, dict(forget=world.forget[:8], retain=world.retain[:8]), 16)
    assert expected and all(scores[name] == pytest.approx(value, abs=1e-9) for name, value in expected.items())
    assert 0 <= scores["mia_score"] <= 1 and scores["utility"] is None  # no --utility rows given


def test_unlearn_with_own_rows_needs_layers(tmp_path, world):
    forget = tmp_path / "forget.jsonl"
    forget.write_text(json.dumps(world.forget[0].to_dict()))
    with pytest.raises(SystemExit, match="give --layers"):
        main(["unlearn", "--forget", str(forget), "--out", str(tmp_path / "x")])


def test_unlearn_stand_in_with_own_rows_reads_the_stand_in_prompts(tmp_path, world):
    forget, retain, stand_ins = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl", tmp_path / "stand_ins.json"
    forget.write_text("\n".join(json.dumps(r.to_dict()) for r in world.forget[:6]))
    retain.write_text("\n".join(json.dumps(r.to_dict()) for r in world.retain[:6]))
    command = ["unlearn", "--forget", str(forget), "--retain", str(retain), "--layers", "0", "--epochs", "1",
               "--objective", "stand_in", "--out", str(tmp_path / "edited")]
    with pytest.raises(SystemExit, match="needs --stand-ins"):
        main(command)
    stand_ins.write_text(json.dumps({row.id: world.stand_ins()[row.id] for row in world.forget[:6]}))
    assert main(command + ["--stand-ins", str(stand_ins)]) == 0
    record = json.loads((tmp_path / "edited" / "unlearning.json").read_text())
    assert record["settings"]["objective"] == "stand_in" and "forget_excess" in record["history"][0]


def test_knowledge_prints_what_the_model_knows(capsys):
    assert main(["knowledge", "--device", "cpu", "--max-new-tokens", "32", "--json"]) == 0
    out = capsys.readouterr().out
    assert "olmo-tiny-bios (olmo, 8 layers" in out
    report = json.loads(out.strip().splitlines()[-1])
    assert report["forget_qa_exact_match"] >= 0.95 and report["holdout_qa_exact_match"] <= 0.05
    assert report["retain_probe_recall"] >= 0.8 and report["holdout_probe_recall"] <= 0.05


def test_audit_command_prints_saves_and_draws(tmp_path, builtin, world, capsys):
    edited = builtin.copy()
    result = cu.unlearn(edited, world.forget[:12], world.retain[:12], layers=[0, 1], objective="grad_diff", epochs=3,
                        lr=2e-3, batch_size=4, grad_accum=1, eval_every=None, select="last", progress=False)
    result.save_pretrained(tmp_path / "edited")
    out = tmp_path / "audit"
    assert main(["audit", "--edited", str(tmp_path / "edited"), "--device", "cpu", "--checks", "probes",
                 "--probes-per-form", "1", "--out", str(out), "--figure", str(out / "audit.html")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["layers"] == [0, 1] and summary["settings"]["n_probes"] == 1500
    import pandas as pd

    frame = pd.read_csv(out / "audit.csv")
    recall = frame.query("check == 'probes' and attribute == 'all' and split == 'forget'").set_index("variant").value
    assert recall["original"] > 0.8 and recall["edited"] < recall["original"]  # two forget people were edited
    headline = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    assert headline["probe_recall_forget"] == pytest.approx(recall["edited"], abs=1e-4)
    assert (out / "audit.html").read_text().count("plotly") > 0


def test_audit_command_with_your_own_probes_rows_labels_and_facts(tmp_path, builtin, world, capsys):
    """Your own files, no cities or months: the audit runs what they support and says what it skips."""
    people = {split: world.people_in(split)[:n] for split, n in (("forget", 4), ("retain", 4), ("holdout", 2))}
    names = {p.name for group in people.values() for p in group}
    task = world.unlearning_task()
    probes = [p for p in task.probes if p.subject in names and p.attribute == "phone"]
    (tmp_path / "probes.jsonl").write_text("\n".join(json.dumps(p.to_dict()) for p in probes))
    for split, rows in (("forget", task.forget), ("retain", task.retain), ("holdout", task.nonmembers)):
        rows = [r for r in rows if any(p.name in r.text for p in people[split])]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(json.dumps(r.to_dict()) for r in rows))
    (tmp_path / "labels.json").write_text(json.dumps({p.name: {"gender": "f" if p.female else "m"}
                                                      for group in people.values() for p in group}))
    builtin.model.save_pretrained(tmp_path / "edited")
    builtin.tokenizer.save_pretrained(tmp_path / "edited")
    base = ["audit", "--edited", str(tmp_path / "edited"), "--device", "cpu", "--probes-per-form", "1"]
    own = ["--probes", str(tmp_path / "probes.jsonl"), "--forget", str(tmp_path / "forget.jsonl"),
           "--retain", str(tmp_path / "retain.jsonl"), "--labels", str(tmp_path / "labels.json"),
           "--nonmembers", str(tmp_path / "holdout.jsonl")]
    assert main([*base, *own, "--relearn-steps", "2", "--out", str(tmp_path / "audit")]) == 0
    printed = capsys.readouterr().out
    assert "skipping retrace: the task has no trace facts" in printed and "built-in" not in printed
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["settings"]["n_probes"] == 2 * len(names)  # a question and a cloze prompt per person
    # the file carries the people's bio openings too (probes of form "opening"): their own check asks them
    assert summary["settings"]["checks"] == ["probes", "choice", "relearning", "precision", "decoding", "bio_openings",
                                             "membership"]
    # the forget rows are the members, the holdout people's rows the non-members
    assert (summary["settings"]["n_members"], summary["settings"]["n_nonmembers"]) == (24, 12)
    assert summary["summary"]["mia_loss_auc"] > 0.8  # the model was trained on the forget rows
    assert summary["settings"]["n_openings"] == len(names) and "bio_openings_forget" in summary["summary"]
    assert "decoding_gender_forget" in summary["summary"]
    # rows or labels without probes are not silently audited against the built-in probes
    assert main([*base, "--forget", str(tmp_path / "forget.jsonl")]) == 2
    assert "give its --probes too" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text(json.dumps({"prompt": "Where?", "answers": ["x"]}))
    assert main([*base, "--probes", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl: line 1 is not a probe" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "trace", "unlearn", "evaluate", "audit", "knowledge"])
def test_help_reads_well(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "built-in name, local folder or hub id (default: olmo-tiny-bios)" in out
    assert "(default: None)" not in out and "(default: False)" not in out


def test_the_console_script_answers():
    completed = subprocess.run([sys.executable, "-m", "causal_unlearn.cli", "--help"], capture_output=True, text=True,
                               check=True)
    assert "causal-unlearn demo" in completed.stdout and "evaluate" in completed.stdout


def test_bad_model_is_a_clear_error(capsys):
    assert main(["knowledge", "--model", "./does-not-exist"]) == 2
    assert capsys.readouterr().err.strip() == "error: no model folder at ./does-not-exist (--debug shows where)"
    with pytest.raises(FileNotFoundError, match="no model folder"):
        main(["knowledge", "--model", "./does-not-exist", "--debug"])
