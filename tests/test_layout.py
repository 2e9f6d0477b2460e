"""The layout is the architecture: layers only import downward (import-linter), imports sit at module
level unless a reason keeps one lazy, and the docs show the tree and the run-folder list as they are."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import layout_tree
import pytest

from llava_df import layout

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # PYTHONPATH first: a copy of the package in ``cwd`` shadows the installed one.
    env = {"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(cwd), "HOME": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml")], cwd=cwd, capture_output=True, text=True,
        env=env, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copytree(
        ROOT / "llava_df", root / "llava_df", ignore=shutil.ignore_patterns("__pycache__", "assets")
    )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_layers_only_import_downward(package_copy):
    done = _lint_imports(package_copy)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(package_copy, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(package_copy, broken)
    labels = broken / "llava_df" / "data" / "labels.py"
    # data is a low layer; training is high above it.
    labels.write_text(
        labels.read_text() + "\n\ndef _upward():\n    import llava_df.train.workflow  # noqa: F401\n"
    )
    done = _lint_imports(broken)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and "llava_df.data.labels -> llava_df.train.workflow" in done.stdout


def test_an_import_cycle_inside_a_layer_breaks_the_contract(package_copy, tmp_path):
    broken = tmp_path / "cycle"
    shutil.copytree(package_copy, broken)
    # labels is imported by synthetic; a lazy import back (what captions <-> synthetic was) closes a cycle.
    labels = broken / "llava_df" / "data" / "labels.py"
    labels.write_text(
        labels.read_text() + "\n\ndef _back():\n    import llava_df.data.synthetic  # noqa: F401\n"
    )
    done = _lint_imports(broken)
    assert done.returncode != 0
    assert "No import cycles between siblings, at any depth BROKEN" in done.stdout


def _redefined(source: str) -> list[tuple[int, str]]:
    """(line, name) of each def or class a module's top level defines a second time: it silently replaces the first."""
    seen, twice = set(), []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name in seen:
                twice.append((node.lineno, node.name))
            seen.add(node.name)
    return twice


def test_no_module_defines_a_function_or_class_twice():
    # ruff's F811 misses a redefinition whose first definition is unused (spec/parse.py had two _to_tokens).
    assert _redefined("def f():\n    return 1\n\n\ndef f():\n    return 2\n") == [(5, "f")]
    twice = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in sorted((ROOT / "llava_df").rglob("*.py"))
        for line, name in _redefined(path.read_text())
    ]
    assert not twice, f"defined twice at module level: {twice}"


def _function_imports(path: Path):
    source = path.read_text()
    lines = source.split("\n")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    yield inner, lines[max(0, inner.lineno - 3) : inner.end_lineno]


def test_imports_sit_at_module_level_unless_a_reason_keeps_one_lazy():
    unexplained = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in sorted((ROOT / "llava_df").rglob("*.py"))
        for node, context in _function_imports(path)
        if not any("# lazy:" in line for line in context)
    ]
    assert not unexplained, f"imports inside functions without a '# lazy: <reason>' comment: {unexplained}"


def test_readme_and_architecture_show_the_package_as_it_is():
    readme = (ROOT / "README.md").read_text()
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    assert layout_tree.block(layout_tree.overview()) in readme, "run `python tools/layout_tree.py --write`"
    assert layout_tree.block(layout_tree.tree()) in architecture, "run `python tools/layout_tree.py --write`"


def test_the_run_folder_list_in_the_docs_is_the_one_in_code():
    docs = (ROOT / "docs" / "run-folder.md").read_text()
    assert layout.describe(layout.RUN_FOLDER) in docs
    assert layout.describe(layout.CHECKPOINT_FOLDER) in docs


def test_every_verb_of_the_console_script_is_declared_in_pyproject():
    import tomllib

    from llava_df.__main__ import VERBS

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"llava-df": "llava_df.__main__:main"}
    assert set(VERBS) == {
        "train",
        "evaluate",
        "predict",
        "demo",
        "merge",
        "compare",
        "plan",
        "projectors",
        "data",
    }
