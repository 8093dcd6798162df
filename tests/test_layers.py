"""The import graph points down (STYLE.md): no module imports from a layer above its own.

Imports under `if TYPE_CHECKING:` are annotations only and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pipeline_events"

#: Layer -> the parts of the package it must never import (at run time).
FORBIDDEN = {
    "store": {"service", "client", "commands", "cli", "projections", "reports", "convert"},
    "projections": {"service", "client", "commands", "cli", "reports", "store", "convert"},
    "reports": {"service", "client", "commands", "cli", "store"},
    "service": {"client", "commands", "cli", "reports", "convert"},
    "client": {"service", "commands", "cli", "reports", "store.sqlite", "store.memory"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _runtime_imports(tree: ast.Module) -> set[str]:
    """pipeline_events.* modules imported outside `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            for child in ast.walk(node) if not isinstance(node, ast.If) else [node]:
                if isinstance(child, ast.ImportFrom) and child.module:
                    if child.module.startswith("pipeline_events"):
                        found.add(child.module)
                        found.update(f"{child.module}.{a.name}" for a in child.names)
                elif isinstance(child, ast.Import):
                    found.update(
                        a.name for a in child.names if a.name.startswith("pipeline_events")
                    )
            if isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)

    visit(tree.body)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if _layer(p) in FORBIDDEN)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_it(path: Path) -> None:
    imports = _runtime_imports(ast.parse(path.read_text()))
    above = {
        name
        for name in imports
        for part in FORBIDDEN[_layer(path)]
        if name == f"pipeline_events.{part}" or name.startswith(f"pipeline_events.{part}.")
    }
    assert above == set()


def test_the_check_sees_imports() -> None:
    source = (
        "from pipeline_events.client import X\nif TYPE_CHECKING:\n    import pipeline_events.cli\n"
    )
    assert _runtime_imports(ast.parse(source)) == {
        "pipeline_events.client",
        "pipeline_events.client.X",
    }
