"""The documentation site builds in strict mode (a broken link or anchor, a missing page or an API
object that no longer exists fails the build), and its notebook pages show what the notebooks draw,
served from 127.0.0.1 to a browser that can reach nothing else."""

import contextlib
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from browser import render

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
WIDGET_STATE = re.compile(r'<script type="application/vnd\.jupyter\.widget-state\+json">(.*?)</script>', re.DOTALL)
WIDGET_VIEW = re.compile(r'<script type="application/vnd\.jupyter\.widget-view\+json">(.*?)</script>', re.DOTALL)
RENDERED_VIEW = '<div class="widget-subarea"><div class="lm-Widget'  # the manager's container, filled


def text_of(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_docs_build_in_strict_mode(tmp_path):
    # Unexecuted, in seconds: the links, anchors and API pages (the `site` fixture executes the notebooks).
    env = dict(os.environ, CAUSAL_UNLEARN_DOCS_EXECUTE="false")
    completed = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                               cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    api = text_of(tmp_path / "api" / "viz" / "index.html")
    assert "TraceExplorer" in api and ">>> explorer.trace_button.click()" in api  # the examples render
    assert (tmp_path / "reproduce" / "index.html").is_file()
    assert not (tmp_path / "hooks.py").exists()
    assert len(NOTEBOOKS) == 5
    for name in NOTEBOOKS:
        page = text_of(tmp_path / "notebooks" / name / "index.html")
        assert "import causal_unlearn as cu" in page or "cu.load_model" in page, name


@contextlib.contextmanager
def served(folder: Path):
    """Serve `folder` over HTTP on 127.0.0.1 (a free port) from a thread of this process; yields its
    URL and the (path, status) of every request. Shut down on leaving."""
    requests: list[tuple[str, int]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_request(self, code="-", size="-"):
            requests.append((self.path, int(code)))

        def log_message(self, *args):
            pass  # the test reads `requests`, not stderr

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as `make docs` builds it, built once for the module. This is where the suite executes
    the notebooks (mkdocs.yml: allow_errors false, so a cell's error fails the build); 2400 s is
    over 3x the build's time on 2 busy cores."""
    folder = tmp_path_factory.mktemp("site")
    env = {name: value for name, value in os.environ.items()
           if name not in ("CAUSAL_UNLEARN_DOCS_EXECUTE", "PLOTLY_RENDERER")}  # as a fresh shell has them
    completed = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
                               check=False, cwd=ROOT, capture_output=True, text=True, timeout=2400, env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def server(site):
    with served(site) as (url, requests):
        yield url, requests


def notebook_page(site: Path, name: str) -> str:
    return (site / "notebooks" / name / "index.html").read_text()


def figure_widgets(page: str) -> int:
    """Plotly FigureWidgets among the widgets the page shows (each draws a plot, like a figure div)."""
    state = WIDGET_STATE.search(page)
    if state is None:
        return 0
    models = json.loads(state.group(1))["state"]
    shown, pending = set(), [json.loads(view)["model_id"] for view in WIDGET_VIEW.findall(page)]
    while pending:  # the displayed views and, through their boxes, the widgets inside them
        model = pending.pop()
        if model not in shown:
            shown.add(model)
            pending += [child.removeprefix("IPY_MODEL_") for child in models[model]["state"].get("children", [])]
    return sum(models[model]["state"].get("_anywidget_id", "").endswith(".FigureWidget") for model in shown)


def test_the_site_executes_the_notebooks_and_shows_their_figures_and_widgets(site):
    page = notebook_page(site, "01_causal_tracing")
    # The three-panel trace, the heads, your own site and metric, and the averaged effects are drawn
    # as HTML, not left as JSON a page cannot show.
    assert page.count("Plotly.newPlot(") == 4
    prompts = re.findall(r"InputArea-prompt\">In\s\[(.*?)\]:", page)
    assert prompts == [str(n) for n in range(1, len(prompts) + 1)] and len(prompts) >= 8  # every cell ran
    # The TraceExplorer's widgets are stored with the state its trace left them in.
    assert "application/vnd.jupyter.widget-state+json" in page
    assert "Spearman rank correlation" in page


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_page_draws_its_figures_and_widgets_with_no_network_but_the_site(site, server, name):
    url, requests = server
    page = notebook_page(site, name)
    first_request = len(requests)
    shown = render(f"{url}/notebooks/{name}/", offline=True, budget_ms=30000)
    figures, views = page.count('class="plotly-graph-div'), len(WIDGET_VIEW.findall(page))
    assert figures + views > 0, "the page shows nothing to check"
    assert shown.plots == figures + figure_widgets(page), shown.console
    assert shown.dom.count(RENDERED_VIEW) == views, shown.console
    assert not [message for message in shown.console if "Uncaught" in message]
    failed = [(path, status) for path, status in requests[first_request:] if status != 200]
    assert not failed  # every script, style and font came from the site
    if name == "01_causal_tracing":  # the TraceExplorer: its controls, and its heatmap among the plots
        assert re.search(r'<button class="[^"]*widget-button[^"]*"[^>]*><i class="fa fa-play"></i>Trace</button>',
                         shown.dom)
        assert figure_widgets(page) == 1


def test_the_offline_browser_reaches_no_host_but_127_0_0_1(tmp_path):
    """The check above means something: a page that loads plotly.js by a host name draws its plot
    where the name resolves and not offline, and a page that loads it from plotly's CDN (as the
    notebook pages did) draws nothing offline."""
    import plotly
    import plotly.graph_objects as go

    shutil.copy(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", tmp_path / "plotly.min.js")
    figure = go.Figure(go.Bar(y=[1, 2]))
    with served(tmp_path) as (url, _):
        by_name = url.replace("127.0.0.1", "localhost")
        (tmp_path / "by-name.html").write_text(figure.to_html(include_plotlyjs=f"{by_name}/plotly.min.js"))
        (tmp_path / "cdn.html").write_text(figure.to_html(include_plotlyjs="cdn"))
        assert render(f"{url}/by-name.html").plots == 1
        assert render(f"{url}/by-name.html", offline=True).plots == 0
        assert render(f"{url}/cdn.html", offline=True).plots == 0
