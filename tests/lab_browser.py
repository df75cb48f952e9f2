"""Use a notebook as a reader does: JupyterLab on 127.0.0.1, opened in headless Chromium, driven
through the DevTools protocol (clicks are DOM clicks on the widgets, saving is JupyterLab's own
save with the widget state). Every wait is bounded; what is started is stopped by its PID.

    python tests/lab_browser.py OUT_DIR   # runs the widgets notebook, saves, reopens; PNGs in OUT_DIR
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import nbformat
import websocket

from causal_unlearn.viz.static_export import find_browser
from local_processes import free_port, stop, wait_until

# the reader's settings: widget state saved with the notebook; no news or update checks (nothing may leave the machine)
LAB_SETTINGS = {
    "@jupyter-widgets/jupyterlab-manager/plugin.jupyterlab-settings": {"saveState": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,2400", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0")


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 serving `root`, with its config, data, runtime and
    settings under `home`; yields the URL prefix (with token) of a notebook path."""
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "OMP_NUM_THREADS": "1"}
    port, token = free_port(), "causal-unlearn-check"
    log = (home / f"jupyterlab-{port}.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         "--allow-root", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.news_url=", "--LabApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.poll() is not None or urllib.request.urlopen(f"{base}/api/status?token={token}",
                                                                                timeout=2).status == 200,
                   timeout=120, what="JupyterLab answering")
        if server.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {server.returncode}: {Path(log.name).read_text()[-2000:]}")
        yield f"{base}/lab/tree/{{path}}?token={token}&reset"
    finally:
        stop(server)
        log.close()


class DevTools:
    """One page of a headless Chromium, driven through the DevTools protocol."""

    def __init__(self, profile: Path, url: str):
        self.browser = subprocess.Popen([find_browser(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.socket = self._connect(profile)
        except BaseException:  # a browser that never answered is stopped too
            stop(self.browser)
            raise
        self.calls = 0

    @staticmethod
    def _connect(profile: Path) -> websocket.WebSocket:
        port_file = profile / "DevToolsActivePort"
        port = wait_until(lambda: port_file.is_file() and port_file.read_text().split("\n")[0], timeout=60,
                          what="Chromium's DevTools port")
        pages = wait_until(lambda: [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                                                                 timeout=2)) if t["type"] == "page"],
                           timeout=30, what="Chromium's page")
        return websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=120, suppress_origin=True)

    def call(self, method: str, **params) -> dict:
        self.calls += 1
        self.socket.send(json.dumps(dict(id=self.calls, method=method, params=params)))
        while True:  # events arrive in between; we have enabled none we need
            message = json.loads(self.socket.recv())
            if message.get("id") == self.calls:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:120]}: {result['exceptionDetails'].get('exception', result)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float, what: str):
        return wait_until(lambda: self.evaluate(expression), timeout=timeout, what=what, every=0.5)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])

    def close(self) -> None:
        with contextlib.suppress(OSError, websocket.WebSocketException):
            self.socket.close()
        stop(self.browser)


NOTEBOOK = "window.jupyterapp?.shell.currentWidget"
KERNEL_IDLE = f"{NOTEBOOK}?.sessionContext?.session?.kernel?.status === 'idle'"
ALL_RUN = (f"{KERNEL_IDLE} && [...{NOTEBOOK}.content.model.cells].every("
           "c => c.type !== 'code' || c.executionCount !== null)")
# What the page shows: plotly's drawn heatmaps and lines, and widgets the page could not draw
SEEN = """(() => ({
  heatmaps: document.querySelectorAll('.js-plotly-plot .heatmaplayer .hm').length,
  lines: document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length,
  plots: document.querySelectorAll('.js-plotly-plot').length,
  placeholders: [...document.querySelectorAll('.js-plotly-plot .annotation-text')].map(a => a.textContent)
                .filter(t => t.startsWith('press Trace') || t.startsWith('the curves appear')).length,
  errors: [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.innerText)
          .filter(t => t.includes('Error displaying widget') || t.includes('Traceback')),
}))()"""


@dataclass
class Shown:
    seen: dict
    png: bytes


@contextlib.contextmanager
def open_notebook(url: str, profile: Path) -> Iterator[DevTools]:
    """A headless Chromium showing the notebook at `url`, closed on leaving (also on failure)."""
    page = DevTools(profile, url)
    try:
        page.wait_for(f"{NOTEBOOK}?.content?.model?.cells?.length > 0", timeout=120, what="the notebook open")
        page.call("Page.enable")
        yield page
    finally:
        page.close()


def use_and_reopen(notebook: nbformat.NotebookNode, work: Path, *, run_timeout: float = 300) -> tuple[Shown, Shown]:
    """Run `notebook` with Run All in JupyterLab, click every widget button labelled Trace, save;
    then start a new server and browser and open the saved file. Returns what was shown before
    and after reopening. The notebook's cells must leave the widgets displayed."""
    root, path = work / "notebooks", "widgets.ipynb"
    root.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, root / path)
    with jupyterlab(root, work / "lab") as url:
        with open_notebook(url.format(path=path), work / "chromium-1") as page:
            page.wait_for(KERNEL_IDLE, timeout=120, what="the kernel started")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for(ALL_RUN, timeout=run_timeout, what="Run All finished")
            clicks = page.evaluate("(() => { const b = [...document.querySelectorAll('.jupyter-widgets button')]"
                                   ".filter(b => b.textContent.trim() === 'Trace'); b.forEach(x => x.click());"
                                   " return b.length; })()")
            assert clicks, "no Trace button on the page"
            page.wait_for("[...document.querySelectorAll('.widget-html-content')].some(e => "
                          "e.textContent.includes('clean'))", timeout=run_timeout, what="the trace drawn")
            page.wait_for(KERNEL_IDLE, timeout=60, what="the kernel idle after tracing")
            time.sleep(1)  # plotly draws the last message's figure asynchronously
            before = Shown(page.evaluate(SEEN), page.screenshot())
            page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
            page.wait_for(f"!{NOTEBOOK}.context.model.dirty", timeout=30, what="the notebook saved")
    saved = nbformat.read(root / path, as_version=4)
    assert "widgets" in saved.metadata, "JupyterLab saved no widget state"
    # a new server, browser and kernel: only the file remains; the same Jupyter data folder, whose
    # signatures trust the notebook its user saved (an untrusted one draws no widgets)
    with jupyterlab(root, work / "lab") as url:
        with open_notebook(url.format(path=path), work / "chromium-2") as page:
            page.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2", timeout=60,
                          what="the saved figures drawn")
            time.sleep(2)
            after = Shown(page.evaluate(SEEN), page.screenshot())
    return before, after


def widgets_notebook() -> nbformat.NotebookNode:
    """A notebook a reader might keep: a trace with its progress bar, the explorer, the dashboard
    filled live by an unlearning run with its progress bar."""
    cells = [
        "import causal_unlearn as cu\nfrom causal_unlearn import viz\n"
        "lm, world = cu.load_model('olmo-tiny-bios'), cu.make_bios_world()",
        "result = cu.trace(lm, 'Ann Teal lives in', 'Ann Teal', kinds=('mlp',), window=1, samples=3)",
        "explorer = viz.TraceExplorer(lm, 'Otto Russet lives in', 'Otto Russet')\nexplorer.samples.value = 3\nexplorer",
        "dashboard = viz.UnlearnDashboard()\ndashboard",
        "run = cu.unlearn(lm, world.forget[:8], world.retain[:8], layers=[0], epochs=2, lr=1e-3, batch_size=4,\n"
        "                 grad_accum=1, eval_every=2, callbacks=[dashboard])",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    notebook.metadata["kernelspec"] = dict(name="python3", display_name="Python 3", language="python")
    return notebook


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "notebook_reopen")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        started = time.monotonic()
        shown = use_and_reopen(widgets_notebook(), Path(work))
        for name, view in zip(("used", "reopened"), shown):
            (out / f"{name}.png").write_bytes(view.png)
            print(name, json.dumps(view.seen))
        print(f"{time.monotonic() - started:.0f} s; screenshots in {out}/")
