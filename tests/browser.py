"""Open a page in headless Chromium, as a reader would, and report what it rendered and logged."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from causal_unlearn.viz.static_export import find_browser

CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")


@dataclass
class Rendered:
    dom: str
    console: list[str]  # every console message and uncaught error, in order

    @property
    def plots(self) -> int:
        """Plotly figures that were drawn (plotly.js adds a plot container to each figure's div)."""
        return self.dom.count('class="plot-container plotly"')

    @property
    def figure_divs(self) -> int:
        return self.dom.count('class="plotly-graph-div')


# Every host name fails to resolve but 127.0.0.1 (a local server): what a reader on an air-gapped
# machine sees, whatever network this machine has. IP literals other than 127.0.0.1 are left
# alone; the pages' CDNs are named hosts.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


def render(page: Path | str, *, budget_ms: int = 20000, offline: bool = False) -> Rendered:
    """Load a file (a Path) or a URL (a str); `offline`: nothing but 127.0.0.1 reachable."""
    url = page.resolve().as_uri() if isinstance(page, Path) else page
    completed = subprocess.run(
        [find_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         *([OFFLINE] if offline else []), f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        check=False, capture_output=True, text=True, timeout=120,
    )
    console = [m.group(1) for line in completed.stderr.splitlines() if (m := CONSOLE.search(line))]
    return Rendered(completed.stdout, console)
