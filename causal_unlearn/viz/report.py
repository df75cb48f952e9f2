"""A self-contained HTML report: figures (interactive, plotly.js inlined once), tables, scores."""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
import plotly.io as pio


@dataclass
class Section:
    """One part of a report: a heading, a paragraph, and optionally a figure and a table."""

    title: str
    text: str = ""
    figure: go.Figure | None = None
    table: Any = None  # a pandas DataFrame

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_")


def report_html(title: str, sections: Sequence[Section]) -> str:
    """The report as one HTML page that needs nothing else (no network, no files).

    Examples:
        >>> import plotly.graph_objects as go
        >>> page = report_html("demo", [Section("bars", "two bars", go.Figure(go.Bar(y=[1, 2])))])
        >>> page.count('class="plotly-graph-div"'), "<h2>bars</h2>" in page
        (1, True)
    """
    parts, figures = [], 0
    for section in sections:
        parts.append(f"<section id='{section.slug}'><h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        if section.figure is not None:
            parts.append(pio.to_html(section.figure, full_html=False, include_plotlyjs=figures == 0,
                                     div_id=f"figure_{section.slug}", config={"displaylogo": False}))
            figures += 1
        if section.table is not None:
            parts.append(section.table.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0,
                                               classes="scores"))
        parts.append("</section>")
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1280px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }}
table.scores {{ border-collapse: collapse; font-size: 0.9em; }}
table.scores td, table.scores th {{ padding: 0.2em 0.8em; text-align: right; border-bottom: 1px solid #eee; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def write_report(folder: str | Path, title: str, sections: Sequence[Section], *, scores: dict | None = None) -> Path:
    """Write `report.html` (and `scores.json` when given) into `folder`; returns the HTML's path.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> write_report(folder, "empty", [Section("notes", "nothing yet")], scores={"final": 0.5}).name
        'report.html'
        >>> sorted(p.name for p in folder.iterdir())
        ['report.html', 'scores.json']
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "report.html"
    page.write_text(report_html(title, sections), encoding="utf-8")
    if scores is not None:
        (folder / "scores.json").write_text(json.dumps(scores, indent=1, default=float), encoding="utf-8")
    return page
