"""Imports run downward only: each part of the package imports only parts below it.

Read from the source (every ``import`` and ``from loce... import``, also those inside
functions), so that a lazy import cannot hide a circle either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import loce

ROOT = Path(loce.__file__).parent

#: Rank of each part of ``loce`` (a subpackage or top-level module): a part imports only parts
#: of a lower rank. Parts of one rank do not import each other.
RANKS = {
    "__version__": 0, "errors": 0,
    "checks": 1, "faults": 1, "memory": 1,
    "fileio": 2, "logs": 2,
    "config": 3,
    "data": 4,
    "losses": 5, "method": 5, "evaluation": 5,
    "models": 6,
    "build": 7,
    "engine": 8,
    "convert": 9, "export": 9,
    "inference": 10,
    "cli": 11, "commands": 11,
    "demo": 12,
    "__main__": 13, "__init__": 13,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    name = ".".join(rel.parts)
    return name.removesuffix(".__init__")


def _imports(path: Path):
    """``(line, imported module)`` for every import of a loce module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "loce":
                for alias in node.names:
                    yield node.lineno, f"loce.{alias.name}"
            elif node.module.startswith("loce."):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("loce."):
                    yield node.lineno, alias.name


def _edges():
    for path in sorted(ROOT.rglob("*.py")):
        source = _part(_module_name(path))
        for line, target in _imports(path):
            dest = _part(target)
            if dest != source:
                yield path, line, source, dest


def test_every_part_has_a_rank():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts - set(RANKS) == set(), "give each new part of the package a rank in RANKS"


def test_imports_run_downward_only():
    wrong = [f"{path.relative_to(ROOT.parent)}:{line}: {source} imports {dest}"
             for path, line, source, dest in _edges() if RANKS[dest] >= RANKS[source]]
    assert wrong == []
