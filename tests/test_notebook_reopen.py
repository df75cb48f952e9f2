"""A notebook with used widgets, saved in JupyterLab and reopened in a new browser, server and
kernel, shows the last figures (tests/lab_browser.py drives a real JupyterLab in headless Chromium)."""

from __future__ import annotations

from lab_browser import use_and_reopen, widgets_notebook


def test_a_saved_notebook_reopens_with_the_last_trace_and_curves(tmp_path):
    used, reopened = use_and_reopen(widgets_notebook(), tmp_path)
    assert used.seen["heatmaps"] == 3 and used.seen["lines"] > 0 and used.seen["placeholders"] == 0, used.seen
    assert reopened.seen == used.seen  # the explorer's three heatmaps and every dashboard curve, no placeholder
    assert reopened.seen["errors"] == []  # no "Error displaying widget: model not found" where a bar was
    assert reopened.png[:8] == b"\x89PNG\r\n\x1a\n"
