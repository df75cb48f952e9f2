"""method="guided": attribution picks the cells, the exact engine scores them."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import causal_unlearn as cu
from causal_unlearn.tracing import AttributionFixes, TraceResult

PROMPT, SUBJECT = "Otto Russet was born in the city of", "Otto Russet"


@pytest.fixture(scope="module")
def traces(builtin):
    settings = dict(kinds=("hidden", "mlp", "head"), samples=3, window=2, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = cu.trace(builtin, PROMPT, SUBJECT, **settings)
        attribution = cu.trace(builtin, PROMPT, SUBJECT, method="attribution", **settings)
        guided = cu.trace(builtin, PROMPT, SUBJECT, method="guided", exact_cells=0.2, **settings)
    return exact, attribution, guided


def test_guided_cells_are_the_exact_numbers_and_the_rest_attributions(traces):
    exact, attribution, guided = traces
    first = guided.subject_range[0]
    assert guided.settings.method == "guided" and "exact cells 0.2" in guided.settings.fixes
    for kind in guided.kinds:
        mask = guided.exact_cells[kind]
        # the cells before the subject restore nothing: exact either way
        assert mask[:first].all()
        chosen = mask[first:]
        assert int(chosen.sum()) == math.ceil(0.2 * chosen.numel())
        # exact up to the rounding of other batch compositions
        torch.testing.assert_close(guided.scores[kind][mask], exact.scores[kind][mask], atol=1e-6, rtol=0)
        torch.testing.assert_close(guided.scores[kind][~mask], attribution.scores[kind][~mask], atol=1e-6, rtol=0)
        # the chosen ones are the strongest estimates
        effects = (attribution.scores[kind] - attribution.low)[first:].abs()
        assert effects[chosen].min() >= effects[~chosen].max()


def test_guided_result_saves_which_cells_are_exact(traces, tmp_path):
    guided = traces[2]
    loaded = TraceResult.load(guided.save(tmp_path / "guided.safetensors"))
    for kind in guided.kinds:
        assert torch.equal(loaded.exact_cells[kind], guided.exact_cells[kind])
    frame = guided.to_dataframe()
    assert frame.exact.sum() == sum(int(m.sum()) for m in guided.exact_cells.values())


def test_guided_settings_are_checked(builtin):
    for bad in (0, 1.5, True, "all"):
        with pytest.raises(ValueError, match="exact_cells is the share"):
            cu.TraceConfig(method="guided", exact_cells=bad)
    with pytest.raises(ValueError, match="exact_cells sets method='guided' only"):
        cu.TraceConfig(exact_cells=5)
    config = cu.TraceConfig(method="guided", exact_cells=3, fixes=AttributionFixes(relp=True))
    result = cu.trace(builtin, PROMPT, SUBJECT, config=config, kinds=("mlp",), samples=2, progress=False)
    assert int(result.exact_cells["mlp"][result.subject_range[0]:].sum()) == 3


def test_a_guided_heatmap_rings_the_exact_cells(traces):
    guided = traces[2]
    fig = guided.plot(kinds=("hidden", "mlp"))
    rings = [trace for trace in fig.data if trace.name == "traced exactly"]
    first = guided.subject_range[0]
    assert [len(r.x) for r in rings] == [int(guided.exact_cells[k][first:].sum()) for k in ("hidden", "mlp")]
    assert "○ traced exactly" in fig.layout.title.text
