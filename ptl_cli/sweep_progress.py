"""A sweep's progress: one line per running cell (its latest logged step) and an overall bar;
off a terminal (a file, Slurm, nohup) plain lines instead: each cell's start and end, and every
``log_every_s`` seconds where each running cell is.

Cells run with ``--quiet`` in their own processes; their progress is read from the newest line
of each one's ``metrics.jsonl`` (:meth:`ptl_cli.runs.Run.position`, which ``ptl runs show`` prints).
"""

from __future__ import annotations

from typing import Any

from ptl_cli.runs import Run


class SweepProgress:
    """``with SweepProgress(sweep) as p``: ``started(cell)``, ``update(running)``, ``finished(cell)``."""

    def __init__(
        self, sweep: Any, enabled: bool = True, log_every_s: float = 30.0, console: Any = None
    ) -> None:
        self.sweep = sweep
        self.enabled = enabled
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._console = console
        self._lines: Any = None  # off a terminal: plain lines (a file, Slurm, nohup)
        self.log_every_s = log_every_s
        self._last = 0.0

    def __enter__(self) -> SweepProgress:
        if self.enabled:
            from rich.console import Console

            console = self._console or Console(stderr=True)
            if not console.is_terminal:
                import time

                self._lines, self._last = console, time.monotonic()
                return self
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

    def _say(self, text: str) -> None:
        self._lines.print(f"[sweep] {text}", markup=False, highlight=False, soft_wrap=True)

    def _done(self) -> str:
        done = sum(c.status == "completed" for c in self.sweep.cells)
        return f"{done}/{len(self.sweep.cells)} cells completed"

    def started(self, cell: Any) -> None:
        if self._lines is not None:
            self._say(f"start {cell.id}")
        if self._bar is not None:
            # a cell's length is its own recipe's business: its line shows the stage and step it has
            # logged, its bar pulses (no made-up total)
            self._tasks[cell.id] = self._bar.add_task(f"  {cell.id}", total=None, count="starting")

    def update(self, running: dict[str, Any]) -> None:
        if self._lines is not None:
            import time

            if time.monotonic() - self._last >= self.log_every_s:
                self._last = time.monotonic()
                for ident in running:
                    self._say(f"{ident}: {Run(self.sweep.path / 'runs' / ident).position()}")
                self._say(self._done())
            return
        if self._bar is None:
            return
        for ident in running:
            task = self._tasks.get(ident)
            if task is None:
                continue
            self._bar.update(task, count=Run(self.sweep.path / "runs" / ident).position())

    def finished(self, cell: Any) -> None:
        if self._lines is not None:
            self._say(f"{cell.status} {cell.id} {cell.error}".rstrip() + f" ({self._done()})")
            return
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
