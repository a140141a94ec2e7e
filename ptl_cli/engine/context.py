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
    started: float = field(default_factory=time.time)

    def should_stop(self) -> bool:
        """True once SIGINT/SIGTERM arrived: save a checkpoint and raise ``Interrupted``."""
        requested = self.guard.requested is not None
        if self.dist.enabled:
            import torch

            flag = torch.tensor([1.0 if requested else 0.0])
            distributed.all_reduce_sum(self.dist, flag)
            requested = bool(flag.item() > 0)
        return requested

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
        self.run.log(clean)

    def save_checkpoint(self, state: dict[str, Any], step: int) -> None:
        if self.dist.is_main:
            self.checkpoints.save(state, step)
        distributed.barrier(self.dist)

    def load_checkpoint(self) -> dict[str, Any] | None:
        return self.checkpoints.load() if self.resuming else None

    def check_finite(self, value: Any, where: str) -> None:
        """Stop with a clear message when a loss is NaN/inf; the last checkpoint is kept."""
        import math

        number = float(value.item() if hasattr(value, "item") else value)
        if not math.isfinite(number):
            saved = self.checkpoints.paths()
            last = saved[-1].name if saved else "none yet"
            raise RunFailure(
                f"loss became {number} at {where}; the last good checkpoint ({last}) is kept: "
                "lower the learning rate (--set train.lr=...) and `ptl resume` or start again"
            )
