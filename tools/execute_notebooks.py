"""Execute every notebook in notebooks/ on the committed results and save it with its outputs, so the tables and
plots the notebooks exist to show are visible on the repository page (tests/test_notebooks.py checks that the
committed outputs are what the code produces now).

    python tools/execute_notebooks.py           # rewrite notebooks/*.ipynb with fresh outputs
    python tools/execute_notebooks.py --check   # exit 1 naming the first cell whose committed output differs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# What a reader sees and what the results decide. text/html is left out: pandas renders the same table with
# other markup from one release to the next, and text/plain holds the same values.
COMPARED = ("text/plain", "text/markdown", "image/png")


@contextlib.contextmanager
def _committed_results():
    """Without LLAVA_DF_* in the environment (the kernel inherits it): LLAVA_DF_RESULTS and friends would point
    the notebook at another results folder than the committed one."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("LLAVA_DF_")}
    try:
        yield
    finally:
        os.environ.update(saved)


def execute(path: Path) -> nbformat.NotebookNode:
    """``path`` executed in its own folder (the default results paths are relative to notebooks/)."""
    notebook = nbformat.read(path, as_version=4)
    with _committed_results():
        NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    return notebook


def visible(notebook: nbformat.NotebookNode) -> list[list[dict]]:
    """Per code cell, what it shows: stream text and the COMPARED representations of its displays."""
    cells = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        shown = []
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                shown.append({"stream": out.name, "text": out.text})
            elif out.output_type in ("display_data", "execute_result"):
                shown.append({k: out.data[k] for k in COMPARED if k in out.data})
            elif out.output_type == "error":
                shown.append({"error": f"{out.ename}: {out.evalue}"})
        cells.append(shown)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    for path in NOTEBOOKS:
        committed = nbformat.read(path, as_version=4)
        fresh = execute(path)
        if args.check:
            for i, (old, new) in enumerate(zip(visible(committed), visible(fresh), strict=False)):
                if old != new:
                    print(f"{path.name}: code cell {i + 1} shows something else than committed; run "
                          "`python tools/execute_notebooks.py` and commit", file=sys.stderr)  # fmt: skip
                    return 1
            continue
        for cell in fresh.cells:
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(fresh, path)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
