"""Atomic, self-healing checkpoints.

``save`` writes ``step-XXXXXXXXX.pt`` atomically and keeps the newest ``keep`` files. ``load``
tries the newest first and falls back to an older one when a file is truncated or corrupt,
saying so. An unreadable file is renamed ``*.pt.corrupt``: kept for inspection, but no longer
counted among the ``keep`` newest, so the next saves cannot prune away the last good checkpoint
while a bad one survives. Files load with ``weights_only=True``: tensors and plain data only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ptl_cli import atomic

_PATTERN = re.compile(r"^step-(\d+)\.pt$")


class CheckpointStore:
    """The checkpoints of one run: ``save(state, step)`` and ``load()`` the newest good one."""

    def __init__(self, directory: Path, keep: int = 2, warn: Callable[[str], None] = print) -> None:
        self.directory = Path(directory)
        self.keep = keep
        self.warn = warn

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := _PATTERN.match(p.name))]
        return [p for _, p in sorted(found)]

    def save(self, state: dict[str, Any], step: int) -> Path:
        from ptl_cli.engine.sync import host_sync

        path = self.directory / f"step-{step:09d}.pt"
        with host_sync("checkpoint"):  # torch.save copies device tensors to the host
            atomic.torch_save(state, path)
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load(self, map_location: Any = "cpu") -> dict[str, Any] | None:
        """The newest readable checkpoint, or None when there is none."""
        return self.load_newest(map_location)[0]

    def load_newest(self, map_location: Any = "cpu") -> tuple[dict[str, Any] | None, Path | None]:
        """``(state, path)`` of the newest readable checkpoint, or ``(None, None)``."""
        paths = self.paths()
        for index in range(len(paths) - 1, -1, -1):
            path = paths[index]
            try:
                return self.load_file(path, map_location), path
            except Exception as exc:  # noqa: BLE001 - any unreadable file means: use an older one
                older = paths[index - 1].name if index > 0 else None
                what = f"falling back to {older}" if older else "no older checkpoint; starting over"
                aside = self._set_aside(path)
                self.warn(f"checkpoint {path.name} is unreadable ({_reason(exc)}); {aside}{what}")
        return None, None

    @staticmethod
    def _set_aside(path: Path) -> str:
        target = path.with_name(path.name + ".corrupt")
        try:
            path.replace(target)
        except OSError:
            return ""
        return f"moved to {target.name}; "

    @staticmethod
    def load_file(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
        import torch

        return torch.load(path, map_location=map_location, weights_only=True)


def _reason(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for a one-line warning."""
    text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
