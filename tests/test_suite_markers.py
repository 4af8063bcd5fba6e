"""Every test that starts another process (a subprocess, Snakemake, a launcher) is marked ``slow``,
so ``pytest -m "not slow"`` stays a quick loop. The test files are read with ``ast``, not run.

A test starts a process when its body, a function or class of its own file it refers to, a helper
it imports from ``tests/conftest.py``, or a fixture it asks for (by argument or ``usefixtures``)
calls one of ``SPAWNING`` (after resolving imports: ``from subprocess import run`` counts too).
It counts as slow when the function, its class or the module's ``pytestmark`` carries
``pytest.mark.slow``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

TESTS = ROOT / "tests"

# Calls that start a process, by their full dotted name.
SPAWNING = {
    "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
    "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput",
    "os.system", "os.popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.posix_spawnp",
    "pty.spawn", "multiprocessing.Process", "multiprocessing.Pool",
    "multiprocessing.get_context", "torch.multiprocessing.spawn",
    "torch.multiprocessing.start_processes", "asyncio.create_subprocess_exec",
    "asyncio.create_subprocess_shell", "snakemake.api.SnakemakeApi", "snakemake.main",
    "snakemake.cli.main", "snakemake.snakemake",
    # project code that starts processes
    "cdrl.train.distributed.launch",
}
SPAWNING_PREFIXES = ("os.exec", "os.spawn")


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return None


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> full dotted name, for every import anywhere in the file."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _resolve(name: str, aliases: dict[str, str]) -> str:
    head, _, rest = name.partition(".")
    full = aliases.get(head, head)
    return f"{full}.{rest}" if rest else full


def _is_slow(decorators: list[ast.expr]) -> bool:
    return any((_dotted(d) or "").endswith("mark.slow") for d in decorators)


def _is_fixture(node: ast.AST) -> str | None:
    """The fixture name a function defines, or None."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    for d in node.decorator_list:
        if (_dotted(d) or "").split(".")[-1] == "fixture":
            for kw in getattr(d, "keywords", []):
                if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                    return kw.value.value
            return node.name
    return None


def _requested_fixtures(node: ast.AST) -> set[str]:
    names = {a.arg for a in node.args.args + node.args.kwonlyargs} if isinstance(
        node, (ast.FunctionDef, ast.AsyncFunctionDef)) else set()
    for d in getattr(node, "decorator_list", []):
        if (_dotted(d) or "").endswith("mark.usefixtures") and isinstance(d, ast.Call):
            names |= {a.value for a in d.args if isinstance(a, ast.Constant)}
    return names


class Module:
    """What one test file defines, and which of its definitions start a process."""

    def __init__(self, path: Path, shared: Module | None = None) -> None:
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.aliases = _aliases(self.tree)
        # Module-level functions and classes (a nested function is part of the one around it).
        defs = [n for n in self.tree.body
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        self.defs = {node.name: node for node in defs}
        self.fixtures = {name: node for node in defs if (name := _is_fixture(node))}
        # Names of conftest's spawning helpers and fixtures, as this file may use them.
        self.shared_helpers = {local for local, full in self.aliases.items() if shared and
                               full.rpartition(".")[0] == "tests.conftest" and
                               full.rpartition(".")[2] in shared.spawning}
        self.shared_fixtures = shared.spawning_fixtures if shared else set()
        self.spawning = self._fixed_point()
        self.spawning_fixtures = {name for name, node in self.fixtures.items()
                                  if node.name in self.spawning} | (
            self.shared_fixtures - set(self.fixtures))

    def _direct(self, node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and (name := _dotted(sub.func)):
                full = _resolve(name, self.aliases)
                if full in SPAWNING or full.startswith(SPAWNING_PREFIXES):
                    return True
        return False

    def _uses(self, node: ast.AST, spawning: set[str], fixtures: set[str]) -> bool:
        if _requested_fixtures(node) & fixtures:
            return True
        return any(isinstance(sub, ast.Name) and (sub.id in spawning or
                                                  sub.id in self.shared_helpers)
                   for sub in ast.walk(node))

    def _fixed_point(self) -> set[str]:
        spawning = {name for name, node in self.defs.items() if self._direct(node)}
        while True:
            fixtures = {f for f, node in self.fixtures.items() if node.name in spawning}
            fixtures |= self.shared_fixtures - set(self.fixtures)
            more = {name for name, node in self.defs.items() if name not in spawning and
                    self._uses(node, spawning, fixtures)}
            if not more:
                return spawning
            spawning |= more

    def tests(self):
        """(name, node, marked slow) of every test function."""
        module_slow = any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "pytestmark"
                                              for t in n.targets)
            and any((_dotted(s) or "").endswith("mark.slow") for s in ast.walk(n.value))
            for n in self.tree.body)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.name.startswith("test"):
                yield node.name, node, module_slow or _is_slow(node.decorator_list)
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                            sub.name.startswith("test"):
                        yield (f"{node.name}::{sub.name}", sub, module_slow or
                               _is_slow(node.decorator_list) or _is_slow(sub.decorator_list))

    def starts_processes(self, node: ast.AST) -> bool:
        return self._direct(node) or self._uses(node, self.spawning, self.spawning_fixtures)


def unmarked_spawning_tests(folder: Path = TESTS) -> tuple[list[str], list[str]]:
    """(tests that start a process without the slow mark, every test that starts one)."""
    conftest = folder / "conftest.py"
    shared = Module(conftest) if conftest.is_file() else None
    unmarked, spawning = [], []
    for path in sorted(folder.glob("test_*.py")):
        mod = Module(path, shared)
        for name, node, slow in mod.tests():
            if mod.starts_processes(node):
                spawning.append(f"{path.name}::{name}")
                if not slow:
                    unmarked.append(f"{path.name}::{name}")
    return unmarked, spawning


def test_every_test_that_starts_a_process_is_marked_slow():
    unmarked, spawning = unmarked_spawning_tests()
    assert len(spawning) > 40  # the checker sees the workflow, cluster and CLI tests
    assert not unmarked, ("these tests start a process but are not marked "
                          "@pytest.mark.slow:\n" + "\n".join(unmarked))


CONFTEST = '''
import subprocess
import pytest

def run_tool():
    return subprocess.run(["true"])

@pytest.fixture
def tool_output():
    return run_tool()
'''

CASES = '''
import os
import sys
from subprocess import Popen as P

import pytest
from tests.conftest import run_tool

def _smk(*args):
    return _inner(*args)

def _inner(*args):
    return os.system("true")

class Runner:
    def go(self):
        return P(["true"])

@pytest.fixture(scope="module")
def started():
    return _smk("-n")

def test_direct():
    import subprocess as sp
    sp.check_output([sys.executable, "-V"])

def test_via_two_helpers():
    _smk("-n")

def test_via_a_class():
    Runner().go()

def test_via_a_fixture(started):
    assert started == 0

def test_via_a_conftest_helper():
    run_tool()

def test_via_a_conftest_fixture(tool_output):
    pass

@pytest.mark.usefixtures("started")
def test_via_usefixtures():
    pass

def test_exec():
    os.execv(sys.executable, [sys.executable])

@pytest.mark.slow
def test_marked():
    _smk("-n")

def test_quick(tmp_path):
    assert sys.executable and os.sep

class TestGroup:
    def test_in_a_class(self):
        _inner()

@pytest.mark.slow
class TestSlowGroup:
    def test_in_a_slow_class(self):
        _inner()
'''


def test_the_checker_finds_unmarked_tests_and_passes_marked_ones(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_cases.py").write_text(CASES)
    unmarked, spawning = unmarked_spawning_tests(tmp_path)
    assert unmarked == [f"test_cases.py::{name}" for name in (
        "test_direct", "test_via_two_helpers", "test_via_a_class", "test_via_a_fixture",
        "test_via_a_conftest_helper", "test_via_a_conftest_fixture", "test_via_usefixtures",
        "test_exec", "TestGroup::test_in_a_class")]
    assert set(spawning) - set(unmarked) == {"test_cases.py::test_marked",
                                             "test_cases.py::TestSlowGroup::test_in_a_slow_class"}
    # A module-level mark covers every test of the file.
    (tmp_path / "test_cases.py").write_text(CASES + "\npytestmark = [pytest.mark.slow]\n")
    assert unmarked_spawning_tests(tmp_path)[0] == []


@pytest.mark.parametrize("source", [
    "import subprocess\ndef test_a():\n    subprocess.run(['true'])\n",
    "import subprocess\nimport pytest\n@pytest.mark.cuda\ndef test_a():\n"
    "    subprocess.Popen(['true'])\n",
    "from snakemake.api import SnakemakeApi\ndef test_a():\n    SnakemakeApi()\n",
    "from cdrl.train.distributed import launch\ndef test_a():\n    launch(2, ['true'])\n",
], ids=["subprocess.run", "Popen, another mark", "snakemake API", "project launcher"])
def test_each_way_of_starting_a_process_is_caught(tmp_path, source):
    (tmp_path / "test_one.py").write_text(source)
    assert unmarked_spawning_tests(tmp_path)[0] == ["test_one.py::test_a"]
