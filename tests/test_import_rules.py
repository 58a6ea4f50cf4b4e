"""The package map's import rules (docs/ARCHITECTURE.md), checked from the source: every import
statement under ``backend/``, at module level or inside a function, counts."""

from __future__ import annotations

import ast
from pathlib import Path

BACKEND = Path(__file__).resolve().parent.parent / "backend"

# package -> packages it must not import
FORBIDDEN = {
    "backend.jobs": ("backend.active_learning", "backend.preannotation", "backend.embeddings"),
    "backend.active_learning": ("backend.preannotation",),
    "backend.proposals": ("backend.active_learning", "backend.preannotation", "backend.jobs", "backend.embeddings"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(BACKEND.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in BACKEND.rglob("*.py")}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The backend modules ``path`` imports anywhere in it (``from a import b`` is ``a.b`` when that
    is a module, else ``a``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return {name for name in found if name in known and name != "backend"}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_the_graph_sees_function_level_imports():
    edges = graph()
    assert "backend.components" in edges["backend.embeddings.rq_queue"]  # imported inside run_embed_job
    assert "backend.preannotation.trigger" in edges["backend.components"]  # inside a cached property


def test_packages_import_only_what_the_map_allows():
    offences = [f"{module} imports {target}" for module, targets in graph().items()
                for package, forbidden in FORBIDDEN.items() if module == package or module.startswith(package + ".")
                for target in targets if any(target == f or target.startswith(f + ".") for f in forbidden)]
    assert offences == []


def test_no_import_cycle_in_the_backend():
    edges = graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)
    assert cycles == []
