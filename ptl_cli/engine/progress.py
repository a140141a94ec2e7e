"""What a run shows while it trains: bars on a terminal, plain log lines everywhere else.

On a terminal (``console.is_terminal``) each task is a rich bar with its latest loss and
accuracy and, when the workflow declared its phases (:meth:`Progress.plan`), an ETA for the
whole run. Off a terminal (stdout to a file, Slurm, ``nohup``) a bar would print nothing for
hours, so each task writes one plain line when it starts, one when it ends, and one every
``log_every_s`` seconds in between: stage, step/total, loss, lr, throughput and ETA.

The values come from the records the loops already log (:meth:`Progress.record`, called by
``ctx.log``), which are Python floats by then: showing them costs no host sync in a training
step. ``--quiet`` (and every rank but 0 under torchrun) turns both off.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Record keys shown beside a task, in this order, with the words a line uses for them.
#: The window of the pace an ETA extrapolates (seconds).
RECENT_S = 120.0

SHOWN = {
    "loss": "loss",
    "lr": "lr",
    "acc": "train acc",
    "train_acc": "train acc",
    "val_acc": "val acc",
    "test_acc": "test acc",
}


def format_duration(seconds: float) -> str:
    """``116.05`` -> ``"1m 56s"``, ``4000`` -> ``"1h 06m"``, ``3.2`` -> ``"3.2s"``: what a reader scans."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key == "lr":
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


@dataclass
class _Task:
    """One bar's worth of state: how far, since when, and the values to show with it."""

    name: str
    total: int
    completed: int
    began: float
    start_step: int  # where this process began (a resumed task's earlier steps took no time here)
    unit: str = "step"
    fields: dict[str, Any] = field(default_factory=dict)
    seen: list[tuple[float, int]] = field(default_factory=list)  # (time, completed), the last minutes

    def note(self, now: float) -> None:
        self.seen.append((now, self.completed))
        while len(self.seen) > 2 and now - self.seen[1][0] > RECENT_S:
            self.seen.pop(0)

    def rate(self, now: float) -> float | None:
        """Units per second over the last few minutes (the whole task before that): a run whose
        steps grow costlier (lanes moving on to P-SSL) gets an ETA of its present pace."""
        then, before = self.seen[0] if self.seen else (self.began, self.start_step)
        if now - then < RECENT_S / 2 or self.completed <= before:
            then, before = self.began, self.start_step
        done, spent = self.completed - before, now - then
        return done / spent if done > 0 and spent > 0 else None

    def eta(self, now: float) -> float | None:
        rate = self.rate(now)
        return (self.total - self.completed) / rate if rate else None


class Progress:
    """``with progress.task(name, total) as advance``: a bar or log lines for one loop.

    ``advance(n=1, **fields)`` moves it on ``n`` units and shows ``fields`` (loops that log
    through ``ctx.log`` need not pass any: :meth:`record` picks loss, lr and accuracy up).
    """

    def __init__(
        self,
        console: Any,
        enabled: bool,
        log_every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.enabled = enabled
        self.bars = enabled and bool(console.is_terminal)
        self.lines = enabled and not console.is_terminal
        self.log_every_s = log_every_s
        self.clock = clock
        self._task: _Task | None = None
        self._planned: dict[str, int] = {}  # phase -> steps, for the whole-run ETA
        self._finished: set[str] = set()
        self._spent = 0.0  # seconds this process spent in planned phases' steps
        self._stepped = 0  # and the steps it made there
        self._last_line = 0.0
        self._refresh: Callable[[], None] = lambda: None

    # -- what workflows call ----------------------------------------------------------------
    def plan(self, steps: dict[str, int]) -> None:
        """Declare the run's phases and their steps, in order: bars and lines then carry an ETA
        for the whole run (phases without steps, such as pools, are not counted)."""
        self._planned = {name: int(n) for name, n in steps.items() if n > 0}

    def record(self, record: dict[str, Any]) -> None:
        """Show the values of a metrics record of the running task's stage (``ctx.log`` calls this)."""
        task = self._task
        if task is None or not self.enabled:
            return
        # one task runs at a time in a process, so what is logged meanwhile is its own (the
        # stage a record names need not be the bar's: a prune run's bar is its whole training)
        for key in SHOWN:
            if isinstance(record.get(key), int | float):
                task.fields[key] = record[key]
        self._refresh()  # a bar shows them now; a line when the next advance is due

    @contextlib.contextmanager
    def task(
        self, description: str, total: int, completed: int = 0, unit: str = "step"
    ) -> Iterator[Callable[..., None]]:
        """Yield an ``advance(n=1, **fields)`` callable for ``total`` units of work (``unit``: what
        a log line calls them, ``step`` or ``shard``)."""
        if not self.enabled:
            yield lambda n=1, **fields: None
            return
        now = self.clock()
        task = _Task(description, int(total), int(completed), now, int(completed), unit)
        self._task = task
        try:
            if self.bars:
                with self._bar(task) as advance:
                    yield advance
            else:
                yield self._line_advance(task)
        finally:
            self._task = None
            if task.name in self._planned:
                self._spent += self.clock() - task.began
                self._stepped += task.completed - task.start_step
                if task.completed >= task.total:
                    self._finished.add(task.name)
        if self.lines:
            self._line(task, "done")

    # -- the whole run ----------------------------------------------------------------------
    def run_eta(self, now: float) -> float | None:
        """Seconds left in the whole run at the pace of the steps seen so far (None: no plan yet,
        or nothing measured)."""
        if not self._planned:
            return None
        task = self._task
        spent, stepped = self._spent, self._stepped
        if task is not None and task.name in self._planned:
            spent += now - task.began
            stepped += task.completed - task.start_step
        if stepped <= 0 or spent <= 0:
            return None
        left = 0
        for name, steps in self._planned.items():
            if name in self._finished:
                continue
            left += steps - task.completed if task is not None and task.name == name else steps
        return max(left, 0) * spent / stepped

    # -- off a terminal -----------------------------------------------------------------------
    def _line_advance(self, task: _Task) -> Callable[..., None]:
        self._last_line = task.began
        self._line(task, "resuming at" if task.completed else "start")

        def advance(n: int = 1, **fields: Any) -> None:
            task.completed = min(task.completed + n, task.total) if task.total else task.completed + n
            task.fields.update(fields)
            task.note(self.clock())
            self._maybe_line(task)

        return advance

    def _maybe_line(self, task: _Task) -> None:
        now = self.clock()
        due = now - self._last_line >= self.log_every_s
        if due and not (task.total and task.completed >= task.total):  # "done" says the rest
            self._last_line = now
            self._line(task, "")

    def _line(self, task: _Task, event: str) -> None:
        """``[pssl] step 120/600 (20%)  loss 0.4312  lr 0.0291  3.1 step/s  ETA 2m 35s  run ETA 9m 40s``."""
        now = self.clock()
        where = f"{task.unit} {task.completed}"
        if task.total:
            where += f"/{task.total} ({100 * task.completed // task.total}%)"
        parts = [" ".join(x for x in (f"[{task.name}]", event, where) if x)]
        parts += [f"{SHOWN.get(k, k)} {format_value(k, v)}" for k, v in task.fields.items()]
        if event == "done":
            parts.append(f"in {format_duration(now - task.began)}")
        elif event == "":
            rate = task.rate(now)
            if rate is not None:
                parts.append(f"{rate:.3g} {task.unit}/s")
            eta = task.eta(now)
            if eta is not None:
                parts.append(f"ETA {format_duration(eta)}")
        run_eta = self.run_eta(now) if event == "" else None
        if run_eta is not None:
            parts.append(f"run ETA {format_duration(run_eta)}")
        self.console.print("  ".join(parts), markup=False, highlight=False, soft_wrap=True)

    # -- on a terminal ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _bar(self, task: _Task) -> Iterator[Callable[..., None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[run]}"),
            console=self.console,
            transient=True,
        )

        def info() -> dict[str, str]:
            shown = "  ".join(f"{SHOWN.get(k, k)} {format_value(k, v)}" for k, v in task.fields.items())
            eta = self.run_eta(self.clock())
            return {"info": shown, "run": f"run ETA {format_duration(eta)}" if eta is not None else ""}

        with bar:
            task_id = bar.add_task(task.name, total=task.total, completed=task.completed, **info())

            def advance(n: int = 1, **fields: Any) -> None:
                task.completed += n
                task.fields.update(fields)
                task.note(self.clock())
                bar.update(task_id, advance=n, **info())

            self._refresh = lambda: bar.update(task_id, **info())
            try:
                yield advance
            finally:
                self._refresh = lambda: None
