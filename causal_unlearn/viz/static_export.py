"""Static export (PDF, SVG, PNG) through kaleido, which drives a Chrome or Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence
from unittest import mock

import plotly.graph_objects as go
import plotly.io as pio

FORMATS = ("pdf", "svg", "png", "jpeg", "webp")
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
        # the figure's own size (write_images would otherwise use kaleido's 700 x 500)
        pio.write_images([fig] * len(targets), targets, scale=scales, width=fig.layout.width, height=fig.layout.height)
    return targets

