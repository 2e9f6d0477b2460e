"""notebooks/ are committed executed (their tables and plots visible on the repository page), and what they show
is what the code produces now from the committed results: executed again here, output by output."""

from __future__ import annotations

import nbformat
import pytest
from execute_notebooks import NOTEBOOKS, execute, visible


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_outputs_are_what_the_code_shows_now(path):
    committed = nbformat.read(path, as_version=4)
    shown = visible(committed)
    assert any(cell for cell in shown), (
        f"{path.name} is committed without outputs: run python tools/execute_notebooks.py"
    )
    assert not [o for cell in shown for o in cell if "error" in o], "a committed cell shows an error"
    fresh = visible(execute(path))
    assert len(fresh) == len(shown)
    for i, (old, new) in enumerate(zip(shown, fresh, strict=True)):
        assert old == new, (
            f"{path.name} code cell {i + 1} differs from its committed output: python tools/execute_notebooks.py"
        )
