"""End to end on the built-in model, as `causal-unlearn demo` runs it: trace the forget facts,
localize, unlearn with the built-in recipe and the `stand_in` objective, score officially,
re-trace, write the report, revert.
The numbers are those in docs/unlearning.md (the same with 1 or 2 threads on this machine kind)."""

import json

import pytest
import torch

import causal_unlearn as cu
from browser import render
from causal_unlearn.demo import run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # the audit's own checks are tested in test_audit.py; here the two that read the demo's edit
    config = cu.AuditConfig(checks=("probes", "retrace"), probes_per_form=1)
    return run_demo(tmp_path_factory.mktemp("demo"), device="cpu", audit_config=config, progress=False,
                    log=lambda line: None)


def test_localize_picks_one_mlp_of_each_of_rome_s_sites(demo):
    found = demo.localization
    assert found.layers == [0, 7]
    # the early site at the subject, the late site at the last token (docs/unlearning.md: 0.503, 0.596)
    assert found.token_group[0] == "last subject token" and found.token_group[7] == "last token"
    assert found.effect[0] > 0.4 and found.effect[7] > 0.4 and found.effect[1:7].max() < 0.3


def test_the_forget_set_is_forgotten_and_the_rest_kept(demo):
    before, after = demo.scores_before, demo.scores_after
    assert before["Task2/forget_knowledge"] == 1.0 and before["utility"] == 1.0
    assert after["Task2/forget_knowledge"] <= 0.05
    assert after["Task2/retain_knowledge"] >= 0.90
    assert after["utility"] >= 0.90 * before["utility"]
    assert after["task_aggregate"] > 0.75 > before["task_aggregate"] == 0
    # membership inference: from members obvious to members hard to tell from never-seen people
    assert after["mia_score"] >= 0.8 > 0.3 > before["mia_score"]


def test_the_audit_asks_in_held_out_words(demo):
    value = demo.audit.value
    assert value("probes", "recall", "forget", "original") > 0.9 and value("probes", "recall", "holdout", "original") < 0.05
    assert value("probes", "recall", "forget", "edited") <= 0.10  # docs/audit.md: 0.048
    assert value("probes", "recall", "retain", "edited") > 0.6  # ... and 0.807 of 0.977 kept
    assert json.loads((demo.folder / "scores.json").read_text())["audit"] == demo.audit.summary()
    assert (demo.folder / "audit.csv").read_text().startswith("check,measure,split,attribute,variant")


def test_the_mlp_effect_at_the_localized_layers_shrinks(demo):
    summary = demo.comparison.summary()
    assert summary["p_answer_after"] < 0.5 * summary["p_answer_before"]
    assert summary["effect_after"] < 0.5 * summary["effect_before"]


def test_the_model_is_restored_and_only_the_localized_mlps_were_edited(demo):
    result, original = demo.unlearning, cu.load_model("olmo-tiny-bios")
    assert all(torch.equal(p, original.model.get_parameter(n)) for n, p in result.model.model.named_parameters())
    result.apply()
    try:
        changed = {n for n, p in result.model.model.named_parameters() if not torch.equal(p, original.model.get_parameter(n))}
        saved = cu.load_model(str(demo.folder / "model"))
        assert all(torch.equal(p, saved.model.get_parameter(n)) for n, p in result.model.model.named_parameters())
    finally:
        result.revert()
    assert changed == set(result.selection.names)
    assert all(name.startswith(("model.layers.0.mlp.", "model.layers.7.mlp.")) for name in changed)


def test_the_report_folder_holds_scores_and_pdfs(demo):
    scores = json.loads((demo.folder / "scores.json").read_text())
    assert scores["layers"] == [0, 7] and scores["after"] == demo.scores_after
    assert sorted(p.name for p in demo.exported) == ["audit.pdf", "average_effects.pdf", "before_after.pdf", "trace.pdf",
                                                     "unlearning.pdf"]
    assert all(p.read_bytes()[:5] == b"%PDF-" for p in demo.exported)


def test_the_report_renders_every_figure_in_chromium_without_console_messages(demo):
    page = render(demo.report)
    assert page.console == []
    assert page.figure_divs == len(demo.figures) == page.plots == 5
    assert "Official SemEval-2025 Task 4 scores" in page.dom and "Audit: asked in ways unlearning never saw" in page.dom


def test_the_render_check_sees_errors_and_missing_plots(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><div class="plotly-graph-div"></div><script>console.error("bad"); '
                      "missingFunction();</script></body></html>")
    page = render(broken)
    assert len(page.console) == 2 and "missingFunction is not defined" in page.console[1]
    assert page.figure_divs == 1 and page.plots == 0
