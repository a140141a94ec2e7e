"""What a workflow receives: the run, its validated recipe, and the engine services."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ptl_cli.engine import distributed
from ptl_cli.engine.checkpoint import CheckpointStore
from ptl_cli.engine.device import Precision
from ptl_cli.engine.interrupt import InterruptGuard
from ptl_cli.engine.progress import Progress
from ptl_cli.errors import RunFailure
from ptl_cli.runs import Run


@dataclass
class RunContext:
    run: Run
    recipe: Any
    device: Any
    precision: Precision
    console: Any
    progress: Progress
    checkpoints: CheckpointStore
    guard: InterruptGuard
    dist: distributed.DistInfo = field(default_factory=distributed.DistInfo)
    resuming: bool = False
    quiet: bool = False
    loggers: Any = None  # ptl_cli.engine.loggers.Loggers: copies of each record for trackers
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self._stop_vote = distributed.StopVote(self.dist)

    def should_stop(self) -> bool:
        """True once SIGINT/SIGTERM arrived: save a checkpoint and raise ``Interrupted``.

        Under torchrun the ranks vote (:class:`ptl_cli.engine.distributed.StopVote`: an
        asynchronous CPU all-reduce, read at the next call): a signal on any rank stops every rank
        at the same step, one call later. Call it on every rank, the same number of times.
        """
        return self._stop_vote(self.guard.requested is not None)

    def say(self, message: str) -> None:
        if not self.quiet and self.dist.is_main:
            self.console.print(message)

    def warn(self, message: str) -> None:
        if self.dist.is_main:
            self.console.print(f"[yellow]warning:[/] {message}")

    def log(self, **record: Any) -> None:
        """Append a metrics record (rank 0 only); tensors are converted to floats here."""
        if not self.dist.is_main:
            return
        clean = {}
        for key, value in record.items():
            if hasattr(value, "item"):
                value = value.item()
            clean[key] = value
        clean.setdefault("time", round(time.time() - self.started, 3))
        new = self.run.log(clean)
        self.progress.record(clean)  # the bar or log line shows its loss, lr, accuracy
        if self.loggers is not None and new:  # a record logged again replaced the first: once
            self.loggers.log(clean)

    def save_checkpoint(self, state: dict[str, Any], step: int) -> None:
        """Rank 0 writes ``state`` atomically; every rank waits until it is on disk."""
        if self.dist.is_main:
            self.checkpoints.save(state, step)
        distributed.barrier(self.dist)

    def load_checkpoint(self) -> dict[str, Any] | None:
        """The newest good checkpoint when resuming, else None.

        Under torchrun rank 0 picks the file (skipping unreadable ones) and every rank loads
        that same file, so all ranks continue from the same step.
        """
        if not self.resuming:
            return None
        if not self.dist.enabled:
            return self.checkpoints.load()
        state, path = self.checkpoints.load_newest() if self.dist.is_main else (None, None)
        chosen = distributed.broadcast_object(self.dist, str(path) if path is not None else None)
        if self.dist.is_main or chosen is None:
            return state
        from pathlib import Path

        return self.checkpoints.load_file(Path(chosen))

    def global_mean(self, **values: Any) -> dict[str, float]:
        """Scalars averaged over data-parallel ranks (as floats): what one process would log.

        A collective under torchrun: call it on every rank, then ``ctx.log`` the result.
        """
        return distributed.mean_over_ranks(self.dist, values)

    def verify_in_sync(self, module: Any, where: str) -> str:
        """Fail clearly if data-parallel ranks hold different weights (a collective; returns a digest).

        Rank 0's BatchNorm statistics are copied to every rank first: DDP leaves each rank with
        statistics of its own share after a step, which is expected, not a divergence; after the
        copy every rank holds the network rank 0 checkpoints, so resumes are exact.
        """
        if not self.dist.enabled:
            return ""
        distributed.sync_buffers(self.dist, module)
        return distributed.verify_in_sync(self.dist, module, where)

    def check_finite(self, value: Any, where: str) -> None:
        """Stop with a clear message when a loss is NaN/inf; the last checkpoint is kept.

        Under torchrun every rank learns when any rank's loss is not finite (a collective), so
        all of them stop together instead of waiting on the one that failed.
        """
        import math

        number = float(value.item() if hasattr(value, "item") else value)
        bad = distributed.any_rank(self.dist, not math.isfinite(number))
        if bad:
            saved = self.checkpoints.paths()
            last = saved[-1].name if saved else "none yet"
            shown = number if not math.isfinite(number) else "not finite on another rank"
            raise RunFailure(
                f"loss became {shown} at {where}; the last good checkpoint ({last}) is kept: "
                "lower the learning rate (--set train.lr=...) and `ptl resume` or start again"
            )
