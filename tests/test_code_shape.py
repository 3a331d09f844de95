"""The house rules that a tool can check: ruff and mypy clean on the product
packages (rules in pyproject.toml), no import cycles, no module of the
product over its size, the sync worker on the shared core only."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_services   # nothing here touches Redis or PostgreSQL

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("flower_ops", "sync_worker")
MAX_MODULE_LINES = 360


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, check=False)


def test_ruff_finds_nothing() -> None:
    done = _run("ruff", "check", *PRODUCT, "testing")
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_finds_nothing() -> None:
    done = _run("mypy", *PRODUCT)
    assert done.returncode == 0, done.stdout + done.stderr


def _modules() -> dict[str, Path]:
    found = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every product module ``path`` imports, wherever the import statement is
    (a lazy or TYPE_CHECKING import is still a dependency)."""
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                if child in known:
                    imported.add(child)
                elif node.module in known:
                    imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names if alias.name in known)
    return imported


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) for name, path in modules.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}   # 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_sync_worker_uses_only_the_shared_core_and_database_layer() -> None:
    modules = _modules()
    reaching = {name: sorted(t for t in _imports(path, modules) if t.startswith("flower_ops")
                             and not t.startswith(("flower_ops.core", "flower_ops.db")))
                for name, path in modules.items() if name.startswith("sync_worker")}
    assert {name: bad for name, bad in reaching.items() if bad} == {}


@pytest.mark.parametrize("package", PRODUCT)
def test_modules_stay_small(package: str) -> None:
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
             for path in (ROOT / package).rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
