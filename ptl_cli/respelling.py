"""Old recipe spellings, read as today's: every component is written ``name`` + ``params``.

A recipe schema (a :class:`ptl_cli.recipes.RecipeBase`) lists the keys it renamed in
``respelled(path)``; recipes and ``--set`` keys in the old spelling keep working, each kind of
rename noted once per process on stderr. Keys are moved per layer (each recipe file of an
``extends`` chain, each flag and ``--set``) before layers merge, so a newer layer wins over an
older one whichever spelling either uses; within one layer, an old and a new key for the same
place are an error rather than a silent choice.
"""

from __future__ import annotations

import sys
from typing import Any

from ptl_cli.errors import UserError

_noted: set[str] = set()


def note(message: str) -> None:
    """Print a deprecation ``message`` on stderr, the first time in this process only."""
    if message not in _noted:
        _noted.add(message)
        sys.stderr.write(f"ptl: deprecated: {message}\n")


def schema_for(data: dict[str, Any]) -> Any:
    """The recipe schema of ``data``'s ``kind`` (its workflow's ``params``), or ``None``."""
    kind = data.get("kind")
    if not isinstance(kind, str):
        return None
    from ptl_cli import plugins

    try:
        return plugins.get("workflows", kind).params
    except UserError:
        return None  # validation reports the unknown kind


def _renamed(schema: Any, path: tuple[str, ...]) -> tuple[tuple[str, ...], str] | None:
    respelled = getattr(schema, "respelled", None)
    return respelled(path) if respelled is not None else None


def respell(data: dict[str, Any], schema: Any, where: str, _path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``data`` (one layer of a recipe, its keys under ``_path``) with old keys moved to today's."""
    if schema is None:
        return data
    out: dict[str, Any] = {}
    moved = []
    for key, value in data.items():
        path = (*_path, key)
        renamed = _renamed(schema, path)
        if renamed is not None:
            moved.append((path, renamed[0], value))
            note(renamed[1])
        elif isinstance(value, dict):
            out[key] = respell(value, schema, where, path)
        else:
            out[key] = value
    for old, new, value in moved:
        node = out
        for part in new[len(_path) : -1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{where}: `{'.'.join(new[: new.index(part) + 1])}` must be a table")
        if new[-1] in node:
            raise UserError(
                f"{where}: `{'.'.join(old)}` and `{'.'.join(new)}` are both set; keep `{'.'.join(new)}` "
                f"(`{'.'.join(old)}` is the deprecated spelling)"
            )
        node[new[-1]] = value
    return out


def respell_key(key: str, schema: Any) -> str:
    """A dotted ``--set``/flag key in today's spelling (``pruner.sparsity`` -> ``pruner.params.sparsity``)."""
    parts = tuple(key.split("."))
    for end in range(1, len(parts) + 1):
        renamed = _renamed(schema, parts[:end])
        if renamed is not None:
            note(renamed[1])
            return ".".join((*renamed[0], *parts[end:]))
    return key
