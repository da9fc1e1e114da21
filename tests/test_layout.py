"""The package's shape, held by tests: imports point one way, no cycles (function-level imports
included), short functions, and worker processes that never import the web framework."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tinymnist

ROOT = Path(tinymnist.__file__).parent
# lower layers never import higher ones: cli -> bench -> serving -> training -> inference -> models -> data -> core
LAYERS = {"core": 0, "data": 1, "models": 2, "inference": 3, "training": 4, "serving": 5, "bench": 6, "cli": 7,
          "__main__": 8}
MAX_LINES, MAX_TRAIN_LINES = 80, 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Every tinymnist module ``name`` imports, at module level or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tinymnist"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tinymnist":
                continue
            known = modules()
            for alias in node.names:  # `from .models import checkpoint` imports a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    return found


def layer(name: str) -> tuple[int, str]:
    parts = name.split(".")
    group = parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"
    return LAYERS[group], group


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in modules().items()}


def test_imports_point_down_only():
    wrong = []
    for name, targets in graph().items():
        level, group = layer(name)
        for target in targets:
            target_level, target_group = layer(target)
            if target == "tinymnist" or target_group == group:
                continue  # the package root holds only __version__; a package may import itself
            if target_level >= level:
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt == node or nxt not in edges:
                continue
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_checker_sees_relative_and_function_level_imports():
    # the rules above are only as good as the import reader: it must see what a real module does
    found = imports_of("tinymnist.cli.use", ROOT / "cli" / "use.py")
    assert "tinymnist.serving.app" in found  # imported inside cmd_serve
    assert "tinymnist.models.checkpoint" in found


def test_functions_are_short():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                limit = MAX_TRAIN_LINES if (name, node.name) == ("tinymnist.training.loop", "train") else MAX_LINES
                if lines > limit:
                    long.append(f"{name}.{node.name}: {lines} lines (at most {limit})")
    assert not long, long


@pytest.mark.parametrize("module", ["tinymnist.serving.workers", "tinymnist.inference.engine"])
def test_inference_workers_do_not_import_the_web_framework(module):
    code = (f"import sys, {module}, tinymnist.models.checkpoint; "
            "print(sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
