"""Figures carry the numbers they claim to show; static export writes real files."""

from __future__ import annotations

import dataclasses
import html
import re
import struct
import subprocess
import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest
import torch
from pypdf import PdfReader

import causal_unlearn as cu
from causal_unlearn import viz
from causal_unlearn.viz import static_export as export_module
from naive_trace import assert_matches_naive
from reference_scoring import official_task_scores


@pytest.fixture(scope="module")
def fact_trace(builtin):
    return cu.trace(builtin, "Otto Russet lives in", "Otto Russet", answer=" Houston", samples=3, window=3,
                    top_predictions=5, progress=False)


@pytest.fixture(scope="module")
def city_traces(builtin, world):
    return cu.trace_facts(builtin, world.facts_to_trace("forget", "city")[:6], window=1, samples=2, progress=False)


N_HEADS = 4


def with_heads(result, seed=0, only=False):
    """`result` with hand-made "head" scores (token x layer x head, between low and high), as a trace
    of single attention heads would give them."""
    generator = torch.Generator().manual_seed(seed)
    shape = (len(result.tokens), result.scores[result.kinds[0]].shape[1], N_HEADS)
    heads = result.low + (result.high - result.low) * torch.rand(shape, generator=generator)
    return dataclasses.replace(result, scores={"head": heads} if only else {**result.scores, "head": heads})


@pytest.fixture(scope="module")
def head_trace(fact_trace):
    return with_heads(fact_trace)


@pytest.fixture(scope="module")
def head_effects(city_traces):
    return cu.average_effects([with_heads(t, seed) for seed, t in enumerate(city_traces)])


def test_trace_figure_shows_the_scores_with_subject_marked_and_floor_at_low(fact_trace, builtin):
    fig = viz.plot_trace(fact_trace, decode=builtin.tokenizer.decode)
    assert [panel.name for panel in fig.data] == ["hidden", "mlp", "attn"]
    for index, panel in enumerate(fig.data):
        np.testing.assert_array_equal(panel.z, fact_trace.scores[panel.name].numpy())
        axis = fig.layout["coloraxis" if index == 0 else f"coloraxis{index + 1}"]
        assert axis.cmin == pytest.approx(fact_trace.low)
        assert axis.colorscale[-1][1] == {"hidden": "rgb(63,0,125)", "mlp": "rgb(0,68,27)", "attn": "rgb(103,0,13)"}[panel.name]
    assert list(fig.layout.yaxis.ticktext) == ["<|endoftext|>", "Otto*", " Russet*", " lives", " in"]
    assert fig.layout.yaxis.autorange == "reversed"  # first token at the top, as in ROME


def test_trace_hover_lists_the_top_next_tokens_of_the_restored_cell(fact_trace, builtin):
    panel = viz.plot_trace(fact_trace, ["mlp"], decode=builtin.tokenizer.decode).data[0]
    last = len(fact_trace.tokens) - 1
    hover = panel.customdata[last][0]
    top_id, top_p = fact_trace.predictions("mlp", last, 0)[0]
    assert f"{builtin.tokenizer.decode([top_id])!r} {top_p:.3f}" in hover
    # with the prob metric the answer's probability is the cell's score
    top = dict(fact_trace.predictions("mlp", last, 0))
    assert top[fact_trace.answer_id] == pytest.approx(float(fact_trace.scores["mlp"][last, 0]), abs=1e-6)


def test_indirect_effect_figure_and_trace_plot_method(fact_trace):
    fig = fact_trace.plot(kinds=["attn"], value="indirect_effect")
    np.testing.assert_allclose(fig.data[0].z, (fact_trace.scores["attn"] - fact_trace.low).numpy(), atol=1e-7)
    assert fig.layout.coloraxis.cmin == 0
    with pytest.raises(ValueError, match="no 'resid' scores"):
        viz.plot_trace(fact_trace, ["resid"])
    with pytest.raises(ValueError, match="unknown value"):
        viz.plot_trace(fact_trace, value="effect")


def test_trace_with_heads_adds_a_layer_by_head_panel_at_the_last_subject_token_and_the_last_token(head_trace):
    fig = viz.plot_trace(head_trace)
    assert [panel.name for panel in fig.data] == ["hidden", "mlp", "attn", "head", "head"]
    end = head_trace.subject_range[1]
    assert viz.trace.default_head_tokens(head_trace) == [end - 1, len(head_trace.tokens) - 1] == [2, 4]
    heads = head_trace.scores["head"].numpy()  # token layer head
    n_layers = heads.shape[1]
    for panel, token in zip(fig.data[3:], [2, 4]):
        # layers across (x), heads down (y): z[head][layer] is the score with that head restored at that layer
        assert np.asarray(panel.z).shape == (N_HEADS, n_layers)
        np.testing.assert_array_equal(panel.z, heads[token].T)
        assert panel.z[3][1] == heads[token, 1, 3]
        assert list(panel.x) == list(range(n_layers)) and list(panel.y) == list(range(N_HEADS))
        assert "layer %{x}" in panel.hovertemplate and "head %{y}" in panel.hovertemplate
        assert "p(answer) %{z:.4f}" in panel.hovertemplate and f"(token {token})" in panel.customdata[0][0]
    titles = [a.text for a in fig.layout.annotations]
    assert titles[3:] == ["heads at ' Russet' (last subject token)", "heads at ' in' (last token)"]
    for axis in ("coloraxis4", "coloraxis5"):  # the colours of the other panels: floor at low, one hue (Blues)
        assert fig.layout[axis].cmin == pytest.approx(head_trace.low)
        assert fig.layout[axis].cmax == pytest.approx(max(float(heads.max()), head_trace.high))
        assert fig.layout[axis].colorscale[-1][1] == "rgb(8,48,107)"
    assert fig.layout.yaxis4.autorange == "reversed" and fig.layout.yaxis4.title.text == "head"
    assert list(fig.layout.yaxis.ticktext) == ["<|endoftext|>", "Otto*", " Russet*", " lives", " in"]
    np.testing.assert_array_equal(fig.data[0].z, head_trace.scores["hidden"].numpy())  # the 2-D panels unchanged


def test_head_figure_alone_at_chosen_tokens(head_trace):
    heads_only = with_heads(head_trace, only=True)
    fig = viz.plot_head_effects(heads_only)
    assert [panel.name for panel in fig.data] == ["head", "head"]
    assert [a.text for a in fig.layout.annotations] == ["heads at ' Russet' (last subject token)", "heads at ' in' (last token)"]
    plotted = heads_only.plot()  # result.plot() draws a trace of heads alone too
    assert [a.text for a in plotted.layout.annotations] == [a.text for a in fig.layout.annotations]
    np.testing.assert_array_equal(plotted.data[1].z, heads_only.scores["head"][4].numpy().T)

    fig = viz.plot_head_effects(head_trace, tokens=[4, -1, 0], value="indirect_effect")  # 4 and -1 are one token
    assert [a.text for a in fig.layout.annotations] == ["heads at ' in' (last token)", "heads at '<|endoftext|>' (token 0)"]
    np.testing.assert_allclose(fig.data[1].z, (head_trace.scores["head"][0] - head_trace.low).numpy().T, atol=1e-7)
    assert fig.layout.coloraxis.cmin == 0

    at_end = dataclasses.replace(heads_only, subject_range=(3, 5))  # the subject ends the prompt: one panel
    assert [a.text for a in viz.plot_head_effects(at_end).layout.annotations] == [
        "heads at ' in' (last subject token, last token)"]
    with pytest.raises(ValueError, match=r"tokens \[5\] are not positions"):
        viz.plot_head_effects(head_trace, tokens=[5])
    with pytest.raises(ValueError, match="not per head"):
        viz.plot_head_effects(head_trace, kind="mlp")
    with pytest.raises(ValueError, match="per head"):
        viz.trace_heatmap(head_trace, "head")


def test_top_predictions_round_trip_and_need_the_exact_method(fact_trace, builtin, tmp_path):
    loaded = cu.TraceResult.load(fact_trace.save(tmp_path / "trace.safetensors"))
    assert loaded.predictions("attn", 2, 3) == fact_trace.predictions("attn", 2, 3)
    with pytest.raises(ValueError, match="top_predictions needs method='exact'"):
        cu.trace(builtin, "Otto Russet lives in", "Otto Russet", method="attribution", top_predictions=3, progress=False)
    plain = cu.trace(builtin, "Otto Russet lives in", "Otto Russet", kinds=("mlp",), samples=1, progress=False)
    with pytest.raises(ValueError, match="kept no top predictions"):
        plain.predictions("mlp", 0, 0)


def test_average_effects_figure_shows_means_and_intervals(city_traces):
    effects = cu.average_effects(city_traces)
    fig = viz.plot_average_effects(effects, ["mlp"])
    had = [g for g, group in enumerate(effects.groups) if effects.count["mlp"][g, 0] > 0]
    assert "middle subject tokens" not in fig.data[0].y  # no subject here has more than two tokens
    assert list(fig.data[0].y) == [effects.groups[g] for g in had]  # groups no fact has are left out
    np.testing.assert_allclose(fig.data[0].z, effects.mean["mlp"][had].numpy())
    band, line = fig.data[1], fig.data[2]
    g = effects.groups.index("last subject token")
    np.testing.assert_allclose(line.y, effects.mean["mlp"][g].numpy())
    np.testing.assert_allclose(band.y, np.concatenate([effects.upper["mlp"][g].numpy(), effects.lower["mlp"][g].numpy()[::-1]]))
    with pytest.raises(ValueError, match="unknown token groups"):
        viz.plot_average_effects(effects, line_groups=["subject"])


def test_average_effects_figure_draws_the_heads_at_token_groups(head_effects):
    fig = viz.plot_average_effects(head_effects)
    assert [panel.name for panel in fig.data if panel.type == "heatmap"] == ["hidden", "mlp", "attn", "head", "head"]
    heads = [panel for panel in fig.data if panel.name == "head"]
    for panel, group in zip(heads, ["last subject token", "last token"]):  # the default groups
        mean = head_effects.mean["head"][head_effects.groups.index(group)].numpy()  # layer head
        np.testing.assert_allclose(panel.z, mean.T)  # layers across, heads down
        assert list(panel.x) == list(range(mean.shape[0])) and list(panel.y) == list(range(N_HEADS))
        assert "head %{y}" in panel.hovertemplate and "6 facts" in panel.customdata[0][0]
    assert [a.text for a in fig.layout.annotations][-2:] == ["average heads at the last subject token",
                                                            "average heads at the last token"]
    had = [g for g, group in enumerate(head_effects.groups) if head_effects.count["mlp"][g, 0] > 0]
    np.testing.assert_allclose(fig.data[0].z, head_effects.mean["hidden"][had].numpy())  # the 2-D kinds as before
    fig = viz.plot_average_effects(head_effects, ["head"], head_groups=["first subject token"])
    assert len(fig.data) == 1
    np.testing.assert_allclose(fig.data[0].z, head_effects.mean["head"][head_effects.groups.index("first subject token")].numpy().T)


def test_unlearning_curves_follow_the_history(builtin, world):
    result = cu.unlearn(builtin, world.forget[:8], world.retain[:8], layers=[0], epochs=2, lr=1e-3, batch_size=4,
                        grad_accum=1, eval_every=3, progress=False)
    try:
        fig = viz.plot_unlearning(result)
    finally:
        result.revert()
    curves = {trace.name: trace for trace in fig.data}
    assert list(curves["loss"].x) == [r["step"] for r in result.history]
    assert list(curves["alpha"].y) == [r["alpha"] for r in result.history]
    assert list(curves["forget answer accuracy"].y) == [r["forget_answer_accuracy"] for r in result.evaluations]
    assert any(shape.x0 == result.selected_step for shape in fig.layout.shapes)


def test_trace_comparison_figure(city_traces):
    comparison = cu.compare_traces(city_traces, city_traces, layers=[0, 7])
    fig = viz.plot_trace_comparison(comparison)
    effects = comparison.layer_effects("mlp")
    np.testing.assert_allclose(fig.data[0].y, effects.before)
    np.testing.assert_allclose(fig.data[1].y, effects.after)
    assert sorted((s.x0 + s.x1) / 2 for s in fig.layout.shapes) == [0, 7]  # the localized layers are shaded


def test_compare_chart_plots_the_table_with_the_original_as_reference():
    table = pd.DataFrame(dict(objective=["none", "sha256", "sha256", "npo"], layer_set=["original", "traced", "all", "traced"],
                              **{"Task2/forget_knowledge": [1.0, 0.02, 0.0, 0.1], "final": [0.4, 0.83, 0.76, 0.7]}))
    fig = viz.plot_layer_sets(table, metrics=["forget QA", "final"])
    bars = [(t.name, list(t.x), t.y.tolist()) for t in fig.data]
    assert bars == [("sha256", ["traced", "all"], [0.02, 0.0]), ("npo", ["traced"], [0.1]),
                    ("sha256", ["traced", "all"], [0.83, 0.76]), ("npo", ["traced"], [0.7])]
    assert sorted(shape.y0 for shape in fig.layout.shapes) == [0.4, 1.0]
    with pytest.raises(ValueError, match=r"no \['MIA'\] columns"):
        viz.plot_layer_sets(table, metrics=["MIA"])


def test_paper_layout_sizes_and_fonts():
    import plotly.graph_objects as go

    fig = viz.paper_layout(go.Figure(go.Scatter(y=[1, 2])), "single")
    assert (fig.layout.width, fig.layout.height) == (312, 234)  # 3.25 in x 96 px/in, 3:4
    template = fig.layout.template.layout
    assert template.font.size == 9 and "Times" in template.font.family
    assert tuple(template.colorway) == viz.OKABE_ITO
    with pytest.raises(ValueError, match="unknown column"):
        viz.paper_layout(fig, "triple")


def test_export_writes_real_pdf_svg_and_png(fact_trace, tmp_path):
    fig = viz.plot_trace(fact_trace, column="double")
    paths = viz.export(fig, tmp_path / "figs" / "trace.pdf", formats=["svg", "png"], scale=2)
    assert [p.name for p in paths] == ["trace.pdf", "trace.svg", "trace.png"]
    assert paths[0].read_bytes()[:5] == b"%PDF-"
    assert ElementTree.parse(paths[1]).getroot().tag.endswith("svg")
    png = paths[2].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (fig.layout.width * 2, fig.layout.height * 2)
    with pytest.raises(ValueError, match=r"cannot export to \['gif'\]"):
        viz.export(fig, tmp_path / "trace.gif")


def pdf_words(path) -> list[tuple[str, float, float, float, float]]:
    """Each word poppler draws on the page (a glyph clipped off the page is not drawn, so a cut
    title loses its letters), with its box in points from the top left, and the page size."""
    out = subprocess.run(["pdftotext", "-bbox", str(path), "-"], capture_output=True, text=True, check=True).stdout
    page = re.search(r'<page width="([\d.]+)" height="([\d.]+)"', out)
    words = [(html.unescape(m[5]), *map(float, m.groups()[:4])) for m in re.finditer(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>', out)]
    return words, (float(page[1]), float(page[2]))


def panel_boxes(svg: str) -> list[tuple[float, float, float, float]]:
    """Each subplot's box in points from the top left, as plotly.js laid it out (its margins grow
    for tick labels and colour bars), read from the SVG of the same figure; outside ticks included."""
    sizes = {name: (float(w), float(h)) for name, w, h in re.findall(
        r'<clipPath id="clip\w*?(x\d*y\d*)plot" class="plotclip"><rect width="([\d.]+)" height="([\d.]+)"', svg)}
    tick = 5  # the template's outside tick length
    boxes = []
    for name, x, y in re.findall(r'<g class="(x\d*y\d*)" transform="translate\(([\d.]+), ?([\d.]+)\)"', svg):
        width, height = sizes[name]
        boxes.append(tuple(0.75 * v for v in (float(x) - tick, float(y), float(x) + width, float(y) + height + tick)))
    return boxes


def titles(fig) -> list[str]:
    """Every axis, colour-bar and panel title of `fig`."""
    layout = fig.layout
    texts = [layout[k].title.text for k in layout if k.startswith(("xaxis", "yaxis"))]
    texts += [layout[k].colorbar.title.text for k in layout if k.startswith("coloraxis")]
    texts += [a.text for a in layout.annotations]
    return [t for t in texts if t]


@pytest.mark.parametrize("column", ["double", "single"])
@pytest.mark.parametrize("figure", ["trace", "average effects", "trace with heads", "average effects with heads"])
def test_exported_pdf_shows_every_title_whole_and_off_the_other_panels(figure, column, fact_trace, city_traces,
                                                                      head_trace, head_effects, tmp_path):
    if figure.startswith("trace"):
        fig = viz.plot_trace(head_trace if "heads" in figure else fact_trace, column=column)
    else:
        fig = viz.plot_average_effects(head_effects if "heads" in figure else cu.average_effects(city_traces), column=column)
    pdf, svg = viz.export(fig, tmp_path / "figure.pdf", formats=["svg"])
    words, (page_width, page_height) = pdf_words(pdf)
    panels = panel_boxes(svg.read_text())
    assert len(panels) == len([k for k in fig.layout if k.startswith("xaxis")])
    assert (page_width, page_height) == pytest.approx((0.75 * fig.layout.width, 0.75 * fig.layout.height), abs=0.5)
    title_words = {word for title in titles(fig) for word in title.split()}
    assert {"layer", "p(answer)" if figure.startswith("trace") else "effect"} <= title_words
    if "heads" in figure:
        assert {"head", "heads", "subject"} <= title_words
    drawn = [w for w in words if w[0] in title_words]
    assert title_words <= {w[0] for w in drawn}, f"cut off or missing: {title_words - {w[0] for w in drawn}}"
    # a word of a tick label too ("last subject token" names a group and a panel of heads) sits beside its panel
    tick_words = {word for panel in fig.data if panel.type == "heatmap" for label in panel.y if isinstance(label, str)
                  for word in label.split()}
    for text, x0, y0, x1, y1 in drawn:
        assert 0 <= x0 and x1 <= page_width and 0 <= y0 and y1 <= page_height, (text, page_width, page_height)
        if text in tick_words:
            continue
        for px0, py0, px1, py1 in panels:
            gap = 2  # points of white beside a panel's ticks (a panel's own title sits right above it)
            overlap = min(x1, px1 + gap) - max(x0, px0 - gap), min(y1, py1) - max(y0, py0)
            assert min(overlap) <= 0, f"the title word {text!r} ({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}) touches a panel"


def test_export_renders_a_file_kaleido_dropped_again_and_raises_if_that_fails(monkeypatch, tmp_path):
    # kaleido deletes the file of a render that failed (a timeout on a busy machine) and returns
    # the error, which plotly's write_images drops
    batched = export_module.pio.write_images

    def dropping_the_pdf(figures, targets, **settings):
        batched(figures, targets, **settings)
        next(t for t in targets if t.suffix == ".pdf").unlink()

    monkeypatch.setattr(export_module.pio, "write_images", dropping_the_pdf)
    pdf, svg = viz.export(torch_free_figure(), tmp_path / "bars.pdf", formats=["svg"])
    assert pdf.read_bytes()[:5] == b"%PDF-" and svg.exists()
    page = PdfReader(pdf).pages[0].mediabox  # cropped to the figure's 700 x 500 px, as without the failure
    assert (float(page.width), float(page.height)) == pytest.approx((700 * 72 / 96, 500 * 72 / 96))

    import kaleido

    def timing_out(*args, **kwargs):
        raise TimeoutError("the render took longer than 90 s")

    monkeypatch.setattr(kaleido, "calc_fig_sync", timing_out)
    with pytest.raises(TimeoutError, match="longer than 90 s"):
        viz.export(torch_free_figure(), tmp_path / "again.pdf")


def test_export_without_a_browser_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("choreographer.cli.defaults.default_download_path", tmp_path / "none")
    with pytest.raises(viz.BrowserNotFoundError, match="apt-get install chromium"):
        viz.export(torch_free_figure(), tmp_path / "fig.pdf")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "chrome"))
    with pytest.raises(viz.BrowserNotFoundError, match="is not an executable file"):
        export_module.find_browser()


def torch_free_figure():
    import plotly.graph_objects as go

    return go.Figure(go.Bar(y=[1, 2]))


def saved_state(widget) -> tuple[list[dict], dict]:
    """What a notebook saved with its widget state stores for a FigureWidget (nbclient and
    JupyterLab both store the state the kernel last synced)."""
    state = widget.get_state()
    return state["_widget_data"], state["_widget_layout"]


def test_trace_explorer_traces_with_the_widget_settings(builtin):
    explorer = viz.TraceExplorer(builtin)
    data, layout = saved_state(explorer.figure)
    assert data == [] and [a["text"] for a in layout["annotations"]] == ["press Trace to draw the causal trace"]
    assert layout["xaxis"]["visible"] is False  # no bare axes from -1 to 6 before the first trace
    explorer.prompt.value, explorer.subject.value = "What is Otto Russet's phone number?", "Otto Russet"
    explorer.kind.value, explorer.window.value, explorer.samples.value = "attn", 2, 3
    explorer.metric.value = "logprob"
    explorer.trace_button.click()
    traced = explorer.result
    assert (tuple(traced.kinds), traced.settings.window, traced.settings.samples, traced.settings.metric) == (
        ("attn",), 2, 3, "logprob")
    assert_matches_naive(builtin, traced)  # the numbers, against ROME's one-forward-per-cell loop
    expected = traced
    assert [panel.name for panel in explorer.figure.data] == ["attn"]
    np.testing.assert_array_equal(explorer.figure.data[0].z, expected.scores["attn"].numpy())
    assert "restored, next token" in explorer.figure.data[0].customdata[0][0]
    assert explorer.progress.value == explorer.progress.max == 1

    explorer.kind.value = "all three"
    explorer.trace_button.click()
    assert [panel.name for panel in explorer.figure.data] == ["hidden", "mlp", "attn"]
    np.testing.assert_array_equal(explorer.figure.data[2].z, expected.scores["attn"].numpy())  # same seed, same noise
    assert explorer.progress.value == 3
    data, layout = saved_state(explorer.figure)  # a reopened notebook shows the last trace
    assert [panel["name"] for panel in data] == ["hidden", "mlp", "attn"]
    np.testing.assert_array_equal(np.asarray(data[2]["z"]), expected.scores["attn"].numpy())
    assert "press Trace" not in str(layout) and layout["title"]["text"] == explorer.figure.layout.title.text

    explorer.subject.value = "Nobody"
    explorer.trace_button.click()
    assert "does not occur in prompt" in explorer.status.value
    assert len(explorer.figure.data) == 3  # the last good trace stays on screen


def test_trace_explorer_offers_heads_and_draws_them_below_the_three_panels(builtin, head_trace, monkeypatch):
    # the core traces heads with trace(..., kinds=("head",)); here a stand-in returns the hand-made head scores
    asked = []

    def fake_trace(model, prompt, subject, *, kinds, **settings):
        asked.append(kinds)
        (kind,) = kinds
        return dataclasses.replace(head_trace, scores={kind: head_trace.scores[kind]}, top_ids={}, top_probs={})

    monkeypatch.setattr("causal_unlearn.viz.explorer.trace", fake_trace)
    explorer = viz.TraceExplorer(builtin, "Otto Russet lives in", "Otto Russet")
    assert list(explorer.kind.options) == ["all three", "all three + heads", "hidden", "mlp", "attn", "head"]
    explorer.kind.value = "head"
    explorer.trace_button.click()
    assert asked == [("head",)] and explorer.result.kinds == ["head"]
    assert [panel.name for panel in explorer.figure.data] == ["head", "head"]
    np.testing.assert_array_equal(explorer.figure.data[1].z, head_trace.scores["head"][4].numpy().T)
    assert [a.text for a in explorer.figure.layout.annotations][-1] == "heads at ' in' (last token)"

    explorer.kind.value = "all three + heads"
    explorer.trace_button.click()
    assert asked[1:] == [("hidden",), ("mlp",), ("attn",), ("head",)] and explorer.progress.value == 4
    assert [panel.name for panel in explorer.figure.data] == ["hidden", "mlp", "attn", "head", "head"]
    np.testing.assert_array_equal(explorer.figure.data[3].z, head_trace.scores["head"][2].numpy().T)
    explorer.kind.value = "all three"  # ROME's three panels only
    explorer.trace_button.click()
    assert asked[5:] == [("hidden",), ("mlp",), ("attn",)]


def test_unlearn_dashboard_updates_live_and_scores_at_the_end(builtin, world):
    task = world.unlearning_task()
    scoring = dict(forget=task.forget[:6], retain=task.retain[:6], members=task.members[:6],
                   nonmembers=task.nonmembers[:6], utility=task.utility[:4], max_new_tokens=16)
    seen: list[int] = []

    class Spy(cu.UnlearnCallback):
        def on_step(self, record):
            seen.append(len(next(t for t in dashboard.figure.data if t.name == "loss").x))

    dashboard = viz.UnlearnDashboard(scoring=scoring)
    data, layout = saved_state(dashboard.figure)
    assert data == [] and "unlearn(..., callbacks=[dashboard])" in layout["annotations"][-1]["text"]
    result = cu.unlearn(builtin, task.forget[:8], task.retain[:8], layers=[7], epochs=2, lr=1e-3, batch_size=4,
                        grad_accum=1, eval_every=2, callbacks=[dashboard, Spy()], progress=False)
    try:
        assert seen == list(range(1, len(result.history) + 1))  # the curve grew at every step
        assert dashboard.progress.value == dashboard.progress.max == len(result.history)
        splits = dict(forget=scoring["forget"], retain=scoring["retain"])
        expected = official_task_scores(builtin.model, builtin.tokenizer, splits, scoring["max_new_tokens"])
    finally:
        result.revert()
    shown = dashboard.scores.to_dict()
    assert expected and all(shown[name] == pytest.approx(value, abs=1e-9) for name, value in expected.items())
    assert "kept step" in dashboard.status.value
    assert re.search(r"final score \d\.\d{3}$", dashboard.status.value), dashboard.status.value
    labels = re.findall(r"<tr><td>([^<]+)</td>", dashboard.score_table.value)
    assert {"forget QA", "retain QA", "MIA AUC", "final"} <= set(labels) and not any("/" in x for x in labels)

    data, layout = saved_state(dashboard.figure)  # a reopened notebook shows the finished curves
    loss = next(curve for curve in data if curve["name"] == "loss")
    assert list(loss["x"]) == [record["step"] for record in result.history]
    assert loss["hovertemplate"] == "step %{x}<br>loss %{y:.4f}<extra></extra>"
    assert [shape["x0"] for shape in layout["shapes"]] == [result.selected_step] * 2
    assert all(a.get("name") != "placeholder" for a in layout["annotations"]) and layout["xaxis"]["visible"]


def test_dashboard_rejects_a_bad_redraw_interval():
    with pytest.raises(ValueError, match="update_every must be a positive integer or None, got 0"):
        viz.UnlearnDashboard(update_every=0)
