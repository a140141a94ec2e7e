"""A sweep's progress: one line per running cell (its latest logged step) and an overall bar.

Cells run with ``--quiet`` in their own processes; their progress is read from the newest line
of each one's ``metrics.jsonl``, the same record ``ptl runs show`` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def latest_record(metrics: Path) -> dict[str, Any]:
    """The last complete JSON line of a ``metrics.jsonl`` (reads only its tail)."""
    try:
        with metrics.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def cell_position(record: dict[str, Any]) -> str:
    """Where a running cell is, from its newest metrics record: ``"pssl step 200"``, ``"epoch 2 step 90"``."""
    parts = [str(record["stage"])] if "stage" in record else []
    parts += [f"{key} {record[key]}" for key in ("epoch", "step") if key in record]
    return " ".join(parts) or "starting"


class SweepProgress:
    """``with SweepProgress(sweep) as p``: ``started(cell)``, ``update(running)``, ``finished(cell)``."""

    def __init__(self, sweep: Any, enabled: bool = True) -> None:
        self.sweep = sweep
        self.enabled = enabled
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> SweepProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._bar.start()
            done = sum(c.status == "completed" for c in self.sweep.cells)
            total = len(self.sweep.cells)
            count = f"{done}/{total} cells"
            self._overall = self._bar.add_task("sweep", total=total, completed=done, count=count)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()

    def started(self, cell: Any) -> None:
        if self._bar is not None:
            # a cell's length is its own recipe's business: its line shows the stage and step it has
            # logged, its bar pulses (no made-up total)
            self._tasks[cell.id] = self._bar.add_task(f"  {cell.id}", total=None, count="starting")

    def update(self, running: dict[str, Any]) -> None:
        if self._bar is None:
            return
        for ident in running:
            task = self._tasks.get(ident)
            if task is None:
                continue
            record = latest_record(self.sweep.path / "runs" / ident / "metrics.jsonl")
            self._bar.update(task, count=cell_position(record))

    def finished(self, cell: Any) -> None:
        if self._bar is None:
            return
        task = self._tasks.pop(cell.id, None)
        if task is not None:
            self._bar.remove_task(task)
        if cell.status == "completed":
            self._bar.advance(self._overall)
            done = int(self._bar.tasks[self._overall].completed)
            self._bar.update(self._overall, count=f"{done}/{len(self.sweep.cells)} cells")
        else:
            self._bar.console.print(f"{cell.status}: {cell.id} {cell.error}".rstrip())
