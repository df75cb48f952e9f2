"""Static export (PDF, SVG, PNG) through kaleido, which drives a Chrome or Chromium."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Sequence
from unittest import mock

import plotly.graph_objects as go
import plotly.io as pio
from pypdf import PdfReader, PdfWriter, Transformation
from pypdf.generic import RectangleObject

FORMATS = ("pdf", "svg", "png", "jpeg", "webp")
# kaleido prints PDFs with Chrome's page margins of 0.1 inch on a page of the figure's size:
# Chrome shrinks the figure to fit the width between the margins and cuts off what then falls
# below the bottom margin (the bottom of every figure wider than tall). Chrome lays the margins
# out in whole CSS px, 9 and not 9.6: measured on text placed at known points, the page then
# holds the figure to 0.1 px at 312 and 648 px wide (with 9.6 it came out 0.4 % too large, so
# that titles in the lower panels of a tall single-column figure slid onto the panels below).
PDF_MARGIN_PX = 9
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserNotFoundError(RuntimeError):
    """Static export needs Chrome or Chromium, and none was found."""


def find_browser() -> str:
    """The Chrome/Chromium kaleido will use: `$BROWSER_PATH`, else the first of
    chromium / google-chrome on the PATH, else the one `plotly_get_chrome` installed.

    Examples:
        >>> import os
        >>> os.access(find_browser(), os.X_OK)
        True
    """
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        if not (Path(explicit).is_file() and os.access(explicit, os.X_OK)):
            raise BrowserNotFoundError(f"BROWSER_PATH={explicit!r} is not an executable file")
        return explicit
    for name in BROWSER_NAMES:
        if found := shutil.which(name):
            return found
    try:  # a Chrome downloaded by `plotly_get_chrome` / `kaleido_get_chrome` lives inside the package
        from choreographer.cli.defaults import default_download_path

        bundled = sorted(Path(default_download_path).rglob("chrome")) if Path(default_download_path).exists() else []
        if bundled:
            return str(bundled[0])
    except ImportError:
        pass
    raise BrowserNotFoundError(
        "exporting figures to PDF / SVG / PNG needs Chrome or Chromium (kaleido drives it), and none was found on the "
        "PATH. Install one: `sudo apt-get install chromium` (Debian/Ubuntu; `make setup` does this as root), "
        "`brew install --cask chromium` (macOS), or `plotly_get_chrome` (downloads one for plotly); or point "
        "BROWSER_PATH at an existing Chrome. Interactive figures (fig.show(), HTML) need no browser install."
    )


def export(
    fig: go.Figure,
    path: str | Path,
    *,
    formats: Sequence[str] | None = None,
    scale: float = 3.0,
) -> list[Path]:
    """Write `fig` to `path` (format from its suffix) and, with `formats`, beside it in those
    formats too (same name, other suffix). PNGs are `scale` x the figure's pixel size (3 x 96
    px per inch = 288 dpi). Returns the written paths.

    Examples:
        >>> import plotly.graph_objects as go, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> [p.name for p in export(go.Figure(go.Bar(y=[1, 2])), folder / "bars.pdf", formats=["svg", "png"])]
        ['bars.pdf', 'bars.svg', 'bars.png']
    """
    path = Path(path)
    wanted = [path.suffix.lstrip(".").lower(), *(f.lower().lstrip(".") for f in formats or ())]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ValueError(f"cannot export to {unknown} (from {str(path)!r} and formats={formats!r}); use one of {FORMATS}")
    browser = find_browser()
    path.parent.mkdir(parents=True, exist_ok=True)
    targets = list(dict.fromkeys(path.with_suffix(f".{f}") for f in wanted))
    # scale enlarges raster images; on a vector page it would only change the page size
    scales = [scale if target.suffix in (".png", ".jpeg", ".webp") else 1 for target in targets]
    with mock.patch.dict(os.environ, BROWSER_PATH=browser):
        figures = [_padded_for_pdf(fig) if target.suffix == ".pdf" else fig for target in targets]
        # each figure's own size (write_images would otherwise use kaleido's 700 x 500)
        sizes = dict(width=[f.layout.width for f in figures], height=[f.layout.height for f in figures])
        pio.write_images(figures, targets, scale=scales, **sizes)
        # kaleido deletes a file whose render failed (a timeout on a busy machine) and returns the
        # error, which plotly drops: such a file is rendered again alone, which raises a second failure
        for figure, target, target_scale, width, height in zip(figures, targets, scales, *sizes.values()):
            if not target.exists():
                pio.write_image(figure, target, scale=target_scale, width=width, height=height)
    for target in targets:
        if target.suffix == ".pdf":
            _crop_to_figure(target, fig)
    return targets


def _size(fig: go.Figure) -> tuple[float, float]:
    return fig.layout.width or 700, fig.layout.height or 500


def _pdf_shrink(fig: go.Figure) -> float:
    """How much Chrome shrinks `fig` to fit its page width between the margins."""
    width, _ = _size(fig)
    return (width - 2 * PDF_MARGIN_PX) / width


def _padded_for_pdf(fig: go.Figure) -> go.Figure:
    """`fig` with room below it for Chrome's margins, so that the printed page holds all of it;
    its plot area and everything on it unchanged. plotly.js grows the margins to fit tick labels
    and colour bars: the grown margins are read off an SVG of the figure and fixed, so that the
    taller canvas does not change them."""
    width, height = _size(fig)
    needed = math.ceil(_pdf_shrink(fig) * height + 2 * PDF_MARGIN_PX)
    if needed <= height:
        return fig
    padded = go.Figure(fig)
    svg = _retried(lambda: pio.to_image(fig, format="svg", width=width, height=height)).decode()
    margin = _laid_out_margins(fig, svg)
    if margin is not None:
        padded.update_layout(margin=dict(margin, autoexpand=False))
    else:  # no cartesian panel to measure: the margins as set, which plotly.js may still grow
        template = padded.layout.template.layout.margin if padded.layout.template else None
        margin = {side: next((m[side] for m in (padded.layout.margin, template) if m is not None and m[side] is not None),
                             80) for side in "lrtb"}
    padded.update_layout(height=needed, margin=dict(b=margin["b"] + needed - height))
    return padded


def _retried(render):
    """`render()`, once more if kaleido's browser failed it (a page whose script had not loaded
    yet on a busy machine: "kaleido_scopes is not defined"); a second failure is raised."""
    try:
        return render()
    except Exception:  # kaleido raises its own and choreographer's error types, none of them public
        return render()


def _laid_out_margins(fig: go.Figure, svg: str) -> dict[str, float] | None:
    """The margins plotly.js laid `fig` out with, from its first panel's place in the SVG and the
    panel's axis domains; None without a cartesian panel."""
    place = re.search(r'<g class="xy" transform="translate\(([\d.]+), ?([\d.]+)\)"', svg)
    size = re.search(r'<clipPath id="clip\w*?xyplot" class="plotclip"><rect width="([\d.]+)" height="([\d.]+)"', svg)
    if place is None or size is None:
        return None
    (x, y), (w, h) = map(float, place.groups()), map(float, size.groups())
    x_domain, y_domain = fig.layout.xaxis.domain or (0, 1), fig.layout.yaxis.domain or (0, 1)
    plot_width, plot_height = w / (x_domain[1] - x_domain[0]), h / (y_domain[1] - y_domain[0])
    left, top = x - x_domain[0] * plot_width, y - (1 - y_domain[1]) * plot_height
    width, height = _size(fig)
    return dict(l=left, t=top, r=width - left - plot_width, b=height - top - plot_height)


def _crop_to_figure(path: Path, fig: go.Figure) -> None:
    """Cut the printed page to the figure and scale it back to the figure's size: the page is
    then exactly what the SVG and PNG show, in vectors."""
    shrink, (width, height) = _pdf_shrink(fig), (px * 72 / 96 for px in _size(fig))
    margin = PDF_MARGIN_PX * 72 / 96
    writer = PdfWriter(clone_from=PdfReader(path))
    for page in writer.pages:
        bottom = float(page.mediabox.top) - margin - shrink * height
        page.add_transformation(Transformation().translate(-margin, -bottom).scale(1 / shrink))
        page.mediabox = page.cropbox = RectangleObject((0, 0, width, height))
    writer.write(path)
