"""The package layout: imports run one way (cli -> plan -> measure -> report -> tasks -> eval ->
train -> baselines -> core -> data -> io) and never in a circle. Every ``import`` counts, top-level or inside a
function, except those under ``if TYPE_CHECKING:`` (annotations only, never executed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("cdrl", "baselines")
# A part may import its own modules and any part with a lower rank.
RANK = {"cdrl": 0, "cdrl.io": 0, "cdrl.data": 1, "cdrl.core": 2, "baselines": 3,
        "cdrl.train": 4, "cdrl.eval": 5, "cdrl.tasks": 6, "cdrl.report": 7, "cdrl.measure": 8,
        "cdrl.plan": 9, "cdrl.cli": 10, "cdrl.__main__": 11}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports when it runs."""
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(here[: len(here) - child.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return {name for name in found if name in known and name != module}


def _part(module: str) -> str:
    return max((p for p in RANK if module == p or module.startswith(p + ".")), key=len)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = _modules()
    return {mod: _imports(mod, path, known) for mod, path in known.items()}


def test_every_module_belongs_to_a_part(graph):
    loose = [m for m in graph if _part(m) == "cdrl" and m != "cdrl"]
    assert not loose, f"modules outside the parts {sorted(RANK)}: {loose}"


def test_imports_run_one_way(graph):
    upward = [f"{mod} ({_part(mod)}) imports {dep} ({_part(dep)})"
              for mod, deps in sorted(graph.items()) for dep in sorted(deps)
              if _part(dep) != _part(mod) and RANK[_part(dep)] >= RANK[_part(mod)]]
    assert not upward, "imports running upward:\n" + "\n".join(upward)


def test_no_import_circle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(mod):
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(graph[mod]):
            if dep == mod.rsplit(".", 1)[0]:  # a module importing its own package's __init__
                continue
            if state.get(dep) == 1:
                circle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if dep not in state:
                dfs(dep)
        stack.pop()
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            dfs(mod)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walk itself: a function-level import upward is found; a TYPE_CHECKING one is not."""
    src = tmp_path / "mod.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from cdrl.core.config import Config\n"
                   "def f():\n    from cdrl.train.trainer import train\n")
    known = _modules()
    assert _imports("cdrl.data.mod", src, known) == {"cdrl.train.trainer"}


def test_docs_name_every_test_file_and_rule_file():
    """docs/testing.md lists every test file; docs/workflow.md and docs/layout.md every rule file."""
    testing = (ROOT / "docs" / "testing.md").read_text()
    missing = [p.name for p in sorted((ROOT / "tests").glob("test_*.py")) if p.name not in testing]
    assert not missing, f"docs/testing.md does not name {missing}"
    for doc in ("workflow.md", "layout.md"):
        text = (ROOT / "docs" / doc).read_text()
        rules = [p.stem for p in sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
        absent = [r for r in rules if f"`{r}`" not in text]
        assert not absent, f"docs/{doc} does not name the rule files {absent}"


def test_atomic_writes_give_files_the_umask_mode_and_leave_no_temporary(tmp_path):
    """``cdrl.io``'s writes replace the file whole and give it the mode a plain ``open`` would
    (mkstemp alone makes it private: 0600, unreadable to a cluster group)."""
    import os
    import stat

    import numpy as np

    from cdrl import io as cio

    mask = os.umask(0o022)
    os.umask(mask)
    fig = __import__("matplotlib.figure", fromlist=["Figure"]).Figure()
    fig.add_subplot().plot([0, 1])
    cio.atomic_write_text(tmp_path / "a.txt", "one")
    cio.atomic_savez(tmp_path / "b.npz", x=np.arange(3))
    cio.atomic_savefig(fig, tmp_path / "c.png")
    for name in ("a.txt", "b.npz", "c.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert np.load(tmp_path / "b.npz")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.npz", "c.png"]
