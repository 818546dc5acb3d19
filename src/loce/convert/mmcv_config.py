"""Read MMDetection config text without executing it.

An MMDetection 2.x checkpoint stores its merged config as text (``meta["config"]``): mmcv's
``Config.pretty_text``, which is Python source made of top-level assignments such as
``model = dict(type='MaskRCNN', backbone=dict(...), ...)``. Config *files* (``*.py``) are the
same language plus ``_base_`` inheritance, ``**img_norm_cfg`` unpacking and string
concatenation (``data_root + 'annotations/...'``).

:func:`parse_config_text` parses that text with :mod:`ast` and evaluates only literal
constructs: numbers, strings, ``True/False/None``, lists, tuples, both dict forms
(``dict(a=1)`` and ``{'a': 1}``), ``**`` unpacking, unary minus, ``+`` on strings and lists
and names assigned earlier in the same text. Nothing is ever executed or imported; any other
expression is kept as an :class:`Unparsed` marker holding its source, so one exotic value
does not make the whole text unreadable. A statement that does not parse is skipped (and
reported) while the statements around it are still read.

:func:`load_config_file` reads a config file and resolves its ``_base_`` files the way mmcv
merges them (nested dicts merged key by key, ``_delete_=True`` replaces).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loce.errors import CheckpointError

__all__ = ["ParsedConfig", "Unparsed", "load_config_file", "lookup", "parse_config_text"]


@dataclass(frozen=True)
class Unparsed:
    """A value whose expression is not a literal (kept as its source text)."""

    source: str

    def __repr__(self) -> str:
        return f"<unparsed: {self.source}>"


@dataclass
class ParsedConfig:
    """The top-level names of a config text and what could not be read.

    Attributes:
        values: top-level name -> value (dicts, lists, tuples, scalars, :class:`Unparsed`).
        skipped: ``"line N: reason"`` for statements that were not assignments or did not parse.
    """

    values: dict[str, Any]
    skipped: list[str]


class _Evaluator:
    """Evaluates the literal subset of Python described in the module docstring."""

    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names = names

    def __call__(self, node: ast.AST) -> Any:
        try:
            return self._eval(node)
        except _NotLiteral:
            return Unparsed(ast.unparse(node))

    def _eval(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        # Inside containers a non-literal element becomes an Unparsed value of its own.
        if isinstance(node, ast.List):
            return [self(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self(e) for e in node.elts)
        if isinstance(node, ast.Dict):
            out: dict[Any, Any] = {}
            for key, value in zip(node.keys, node.values):
                if key is None:  # {**other, ...}
                    out.update(self._mapping(value))
                else:
                    out[self._eval(key)] = self(value)
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            if node.args:
                raise _NotLiteral
            out = {}
            for kw in node.keywords:
                if kw.arg is None:  # dict(**other, ...)
                    out.update(self._mapping(kw.value))
                else:
                    out[kw.arg] = self(kw.value)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self._eval(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
            raise _NotLiteral
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self._eval(node.left), self._eval(node.right)
            if type(left) is type(right) and isinstance(left, (str, list, tuple)):
                return left + right
            raise _NotLiteral
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            raise _NotLiteral
        raise _NotLiteral

    def _mapping(self, node: ast.AST) -> Mapping[Any, Any]:
        value = self._eval(node)
        if not isinstance(value, Mapping):
            raise _NotLiteral
        return value


class _NotLiteral(Exception):
    pass


def _statements(text: str) -> tuple[list[tuple[int, ast.stmt]], list[str]]:
    """Top-level statements of ``text`` with their line numbers; a text that does not parse
    as a whole is cut into chunks at unindented lines and each chunk parsed on its own."""
    try:
        return [(s.lineno, s) for s in ast.parse(text).body], []
    except SyntaxError:
        pass
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines)
              if line and not line[0].isspace() and line[0] not in ")]}#"]
    starts.append(len(lines))
    out: list[tuple[int, ast.stmt]] = []
    skipped: list[str] = []
    for a, b in zip(starts, starts[1:]):
        chunk = "\n".join(lines[a:b])
        try:
            body = ast.parse(chunk).body
        except SyntaxError as err:
            skipped.append(f"line {a + 1}: not valid Python ({err.msg})")
            continue
        out.extend((a + s.lineno, s) for s in body)
    return out, skipped


# mmcv's ``Config.text`` (what older MMDetection versions stored) concatenates the base files
# and the config file, each after a line holding its path.
_FILE_LINE = re.compile(r"^\S+\.py$")


def parse_config_text(text: str) -> ParsedConfig:
    """Parse mmcv config text (see the module docstring); never executes it.

    Besides ``Config.pretty_text`` (one merged config) this reads ``Config.text``, the
    concatenation of the base files and the config file, each headed by its path: the files
    are read one by one and merged in order, as mmcv merges them.

    Args:
        text: the config source (``meta["config"]`` of a checkpoint, or a config file).

    Returns:
        The top-level assignments and what was skipped.
    """
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if _FILE_LINE.match(line)]
    if not heads:
        return _parse_one(text)
    merged: dict[str, Any] = {}
    skipped: list[str] = []
    bounds = [0, *heads, len(lines)] if heads[0] else [*heads, len(lines)]
    for a, b in zip(bounds, bounds[1:]):
        start = a + 1 if a in heads else a
        part = _parse_one("\n".join(lines[start:b]))
        part.values.pop("_base_", None)
        merged = _merge(merged, part.values)
        skipped += [f"{lines[a] if a in heads else 'text'}: {s}" for s in part.skipped]
    return ParsedConfig(merged, skipped)


def _parse_one(text: str) -> ParsedConfig:
    values: dict[str, Any] = {}
    statements, skipped = _statements(text)
    evaluate = _Evaluator(values)
    for lineno, stmt in statements:
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            value = evaluate(stmt.value)
            for target in stmt.targets:
                values[target.id] = value  # type: ignore[attr-defined]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            values[stmt.target.id] = evaluate(stmt.value)
        elif not isinstance(stmt, (ast.Import, ast.ImportFrom, ast.Expr)):
            skipped.append(f"line {lineno}: {type(stmt).__name__} statement ignored")
    return ParsedConfig(values, skipped)


def lookup(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """``config["a"]["b"]["c"]`` for ``"a.b.c"``, or ``default`` where a level is missing."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _merge(base: dict[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """mmcv's merge: nested dicts merge key by key unless the child says ``_delete_=True``."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, Mapping) and not value.get("_delete_", False) and isinstance(
            out.get(key), Mapping
        ):
            out[key] = _merge(dict(out[key]), value)
        elif isinstance(value, Mapping):
            out[key] = {k: v for k, v in value.items() if k != "_delete_"}
        else:
            out[key] = value
    return out


def load_config_file(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> ParsedConfig:
    """Read an MMDetection config file and the ``_base_`` files it names (never executed).

    Raises:
        CheckpointError: the file or one of its base files cannot be read, or the bases form
            a cycle.
    """
    path = Path(path)
    if path.resolve() in _seen:
        raise CheckpointError(f"{path}: its _base_ files form a cycle")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CheckpointError(f"cannot read the MMDetection config {path}: {err}") from None
    parsed = parse_config_text(text)
    bases = parsed.values.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else list(bases)
    merged: dict[str, Any] = {}
    skipped: list[str] = []
    for base in bases:
        if not isinstance(base, str):
            raise CheckpointError(f"{path}: _base_ must name config files, got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise CheckpointError(
                f"{path}: its base config {base} ({base_path}) does not exist; pass the merged "
                "config instead (an MMDetection checkpoint stores it in meta['config'])"
            )
        inherited = load_config_file(base_path, (*_seen, path.resolve()))
        merged = _merge(merged, inherited.values)
        skipped += [f"{base}: {s}" for s in inherited.skipped]
    merged = _merge(merged, parsed.values)
    return ParsedConfig(merged, skipped + parsed.skipped)
