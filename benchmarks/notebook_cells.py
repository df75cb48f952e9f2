"""How long each notebook cell takes, against a per-cell limit (`pytest --nbmake notebooks
--nbmake-timeout=1200` runs the notebooks on their own with one).

The suite executes every notebook once, top to bottom, when tests/test_docs.py builds the docs
site (2400 s for the whole build); no cell should come within 3x of the per-cell limit, nor the
notebooks' total within 3x of the build's, so that a busy CI machine does not fail them. This
executes each notebook on a fresh kernel and prints its slowest cells and its total.

    python benchmarks/notebook_cells.py [--limit 1200] [notebooks/02_localize_and_unlearn.ipynb ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def cell_seconds(path: Path) -> list[tuple[int, float, str]]:
    """(cell index, seconds, first line) of each code cell, executed in the notebook's folder."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=None, resources={"metadata": {"path": str(path.parent)}})
    timings = []
    with client.setup_kernel():
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            start = time.perf_counter()
            client.execute_cell(cell, index)
            timings.append((index, time.perf_counter() - start, cell.source.splitlines()[0] if cell.source else ""))
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--limit", type=float, default=1200.0, help="a per-cell timeout (nbmake's --nbmake-timeout)")
    parser.add_argument("--top", type=int, default=3, help="slowest cells shown per notebook")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    print("| notebook | total s | cell | s | limit / s | first line |\n| --- | --- | --- | --- | --- | --- |")
    for path in paths:
        timings = cell_seconds(path)
        total = sum(seconds for _, seconds, _ in timings)
        for index, seconds, first in sorted(timings, key=lambda t: -t[1])[: args.top]:
            print(f"| {path.name} | {total:.0f} | {index} | {seconds:.1f} | {args.limit / seconds:.0f}x | `{first[:50]}` |")


if __name__ == "__main__":
    main()
