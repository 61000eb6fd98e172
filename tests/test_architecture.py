"""The package's layering (docs/architecture.md), kept by reading every import in the source.

Imports inside functions count too: a lazy import is still an arrow. The rules:
- a module imports only from its own layer or earlier ones (no upstream arrows);
- no import circle between modules;
- nothing at runtime imports the build-time tools, the benchmarks or the parity checks.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gagavatar"

# The pipeline, earliest first. A unit is a top-level module or subpackage of gagavatar.
LAYERS = [
    ("foundations", {"errors", "settings", "io", "geometry", "system", "known_files", "assets"}),
    ("head model and rasterizer", {"head", "render"}),
    ("data", {"data"}),
    ("tracking and synthetic data", {"tracking", "synthetic"}),
    ("reconstruction", {"model", "perceptual", "export"}),
    ("speech to motion", {"speech"}),
    ("driving", {"reenact"}),
    ("evaluation", {"eval"}),
    ("training", {"train"}),
    ("what the commands do", {"commands", "live", "app", "serve", "doctor"}),
    ("entry points", {"bench", "cli", "__main__", "__init__"}),
    ("build-time tools", {"tools"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
# modules (or packages: their modules too) nothing else may import (run as programs or
# sub-commands), and who may; a package's own modules import each other
ENTRY_ONLY = {"gagavatar.bench": {"gagavatar.cli"}, "gagavatar.model.parity": set(),
              "gagavatar.reenact.parity": set(), "gagavatar.speech.parity": set()}


def entry_only(module: str) -> str | None:
    """The ENTRY_ONLY module or package that ``module`` is or is inside, if any."""
    return next((m for m in ENTRY_ONLY if module == m or module.startswith(m + ".")), None)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The gagavatar modules ``path`` imports, anywhere in it (``from gagavatar.x import y`` is
    module gagavatar.x.y when that is a module, else gagavatar.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("gagavatar")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gagavatar"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(path, set(found)) - {name} for name, path in found.items()}


def test_every_unit_has_a_layer():
    units = {unit(m) for m in modules()}
    assert not units - set(LAYER_OF), f"units missing from LAYERS (and docs/architecture.md): {units - set(LAYER_OF)}"


def test_no_upstream_arrows(graph):
    bad = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
           if LAYER_OF[unit(b)] > LAYER_OF[unit(a)]]
    assert not bad, "imports from a later pipeline stage:\n" + "\n".join(sorted(bad))


def test_no_import_circles(graph):
    # a package's __init__ re-exports its modules: count only module-to-module arrows
    edges = {a: {b for b in targets if not (a.startswith(b + ".") or b.startswith(a + "."))}
             for a, targets in graph.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    # and between units (a subpackage importing another that imports it back)
    units = {}
    for a, targets in graph.items():
        units.setdefault(unit(a), set()).update(unit(b) for b in targets if unit(b) != unit(a))
    mutual = sorted({tuple(sorted((a, b))) for a, bs in units.items() for b in bs if a in units.get(b, ())})
    assert not mutual, f"units importing each other: {mutual}"


def test_runtime_never_imports_tools_benchmarks_or_checks(graph):
    bad = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
           if (unit(b) == "tools" and unit(a) != "tools")
           or (entry_only(b) and a not in ENTRY_ONLY[entry_only(b)] and entry_only(a) != entry_only(b))]
    assert not bad, "\n".join(sorted(bad))


def test_the_cli_imports_no_torch():
    """`gagavatar --help` answers fast: importing the CLI pulls in neither torch nor mediapipe
    (timed as a benchmark in docs/results.md, not here)."""
    code = "import sys, gagavatar.cli; print(','.join(m for m in ('torch', 'mediapipe', 'gradio') if m in sys.modules))"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing gagavatar.cli imports {out} ({time.perf_counter() - t0:.1f} s)"
