"""Atomic file writes: write a temporary file beside the target, fsync, then rename.

A crash or kill at any moment leaves either the old file or the new one, never half of one. The
file gets the mode a plain ``open(path, "w")`` would give it (``0o666`` less the umask), not the
``0o600`` of a temporary file, and a write the system refuses (a full disk, a read-only folder)
is a one-line :class:`~ptl_cli.errors.RunFailure` that names the file, with nothing left behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ptl_cli.errors import RunFailure

_UMASK: list[int] = []


def umask() -> int:
    """This process's umask (read once; Linux reports it without changing it)."""
    if not _UMASK:
        value = None
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    value = int(line.split()[1], 8)
        except (OSError, ValueError):
            value = None
        if value is None:
            value = os.umask(0o022)
            os.umask(value)
        _UMASK.append(value)
    return _UMASK[0]


def write_failure(path: str | os.PathLike[str], exc: OSError) -> RunFailure:
    """A write the system refused, in one line: which file, and why (full disk, read-only, ...)."""
    why = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"{why} (free some space, then `ptl resume` continues the run)"
    return RunFailure(f"cannot write {path}: {why}")


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise write_failure(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failure(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_text(path: str | os.PathLike[str], text: str) -> None:
    """Append ``text`` (whole lines) to a log file; a refused write is a RunFailure naming it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, text.encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:
        raise write_failure(path, exc) from None


def torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` made atomic."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())
