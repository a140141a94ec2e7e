"""Rich progress bars that stay silent when output is not a terminal or with ``--quiet``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class Progress:
    def __init__(self, console: Any, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled and console.is_terminal

    @contextlib.contextmanager
    def task(self, description: str, total: int, completed: int = 0) -> Iterator[Any]:
        """Yield an ``advance(n=1, **fields)`` callable for a bar of ``total`` steps."""
        if not self.enabled:
            yield lambda n=1, **fields: None
            return
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
            console=self.console,
            transient=True,
        )
        with bar:
            task_id = bar.add_task(description, total=total, completed=completed, info="")

            def advance(n: int = 1, **fields: Any) -> None:
                info = "  ".join(
                    f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()
                )
                bar.update(task_id, advance=n, info=info)

            yield advance
