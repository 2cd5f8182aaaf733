"""The package's wings and the direction of imports (docs/architecture.md).

Every import of a package module, at module level or inside a function, is read from the source:
an import may go to a lower wing or stay in its own wing, never up, and no module reaches itself
through a chain of imports.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import napari_deep_prl

PACKAGE = Path(napari_deep_prl.__file__).parent
NAME = "napari_deep_prl"

#: Wings from the bottom up; a module may import its own wing and the wings below it.
LEVELS: dict[str, int] = {
    "base": 0,
    "data": 1,
    "model": 2, "ratings": 2, "simulate": 2,
    "scoring": 3,
    "evaluation": 4, "active": 4,
    "_napari": 5,
    "cli": 6,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The package modules a source file imports (``from pkg import module`` counts the module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == NAME)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            if base.split(".")[0] != NAME:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return found - {name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
EDGES = sorted((m, target) for m, p in MODULES.items() for target in imports(p) if target in MODULES)


def find_cycle(edges: list[tuple[str, str]]) -> list[str] | None:
    """One import cycle among ``edges`` (importer, imported), or ``None``."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return list(err.args[1])
    return None


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LEVELS else None


def test_every_module_is_in_a_wing():
    loose = sorted(m for m in MODULES if m != NAME and wing(m) is None)
    assert not loose, f"modules outside the wings {sorted(LEVELS)}: {loose}"


def test_the_import_test_sees_imports():
    assert len(EDGES) > 100
    assert ("napari_deep_prl.data.lesions", "napari_deep_prl.data.images") in EDGES


def test_imports_run_downward_only():
    wrong = [f"{a} imports {b}" for a, b in EDGES if b != NAME and a != NAME and not allowed(wing(a), wing(b))]
    assert not wrong, "imports that go up or sideways between wings:\n" + "\n".join(wrong)


def allowed(importer: str, imported: str) -> bool:
    return importer == imported or LEVELS[imported] < LEVELS[importer]


def test_a_wrong_import_would_be_found():
    assert not allowed("data", "model") and not allowed("model", "ratings") and allowed("scoring", "model")


def test_no_import_cycles():
    cycle = find_cycle(EDGES)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("cycle", [("a", "b"), ("a", "b", "c")])
def test_a_cycle_would_be_found(cycle):
    assert find_cycle([("x", "a"), *zip(cycle, cycle[1:] + cycle[:1])]) is not None
    assert find_cycle([("x", "a"), *zip(cycle, cycle[1:])]) is None
