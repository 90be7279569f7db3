"""The layers of geoseg's folders: no package imports another in a cycle, core reads no files."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

GEOSEG = Path(__file__).resolve().parents[1] / "geoseg"


def _package(module: str) -> str | None:
    """The sub-package (``core``, ``io``...) a ``geoseg.*`` module belongs to, or the module."""
    parts = module.split(".")
    if parts[0] != "geoseg" or len(parts) < 2:
        return None
    return parts[1]


def package_imports() -> dict[str, set[str]]:
    """Sub-package -> the other sub-packages and top-level modules it imports (anywhere)."""
    edges: dict[str, set[str]] = {}
    for path in GEOSEG.rglob("*.py"):
        rel = path.relative_to(GEOSEG.parent).with_suffix("")
        src = _package(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                if node.module == "geoseg":
                    names = [f"geoseg.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                dst = _package(name)
                if dst and src and dst != src:
                    edges.setdefault(src, set()).add(dst)
    return edges


def test_no_package_imports_another_in_a_cycle():
    edges = package_imports()
    assert edges.get("commands"), "the scan found no imports: check the paths"

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        if a == b:
            return True
        seen.add(a)
        return any(reaches(n, b, seen) for n in edges.get(a, ()) if n not in seen)

    cycles = [
        (a, b)
        for a, b in itertools.permutations(edges, 2)
        if b in edges[a] and reaches(b, a, set())
    ]
    assert not cycles, cycles


def test_core_is_pure_and_io_sees_no_model():
    edges = package_imports()
    assert not edges.get("core", set()) & {"io", "model", "run", "data", "train", "report"}
    assert not edges.get("io", set()) & {"model", "run", "data", "train", "report", "commands"}
