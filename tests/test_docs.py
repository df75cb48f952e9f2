"""The documentation site builds in strict mode (a broken link, a missing page or an API object
that no longer exists fails the build)."""

import html
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_in_strict_mode(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    api = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / "api" / "viz" / "index.html").read_text()))
    assert "TraceExplorer" in api and ">>> explorer.trace_button.click()" in api  # the examples render
    assert (tmp_path / "reproduce" / "index.html").is_file()
