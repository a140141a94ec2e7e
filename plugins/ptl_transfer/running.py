"""The running phase's state and the run's checkpoints.

A checkpoint holds the finished phases' results (``done``) and, while a phase trains, its
:class:`Running` state with the RNG: resume skips the finished phases and continues the running
one exactly. Its layout has a version, checked when a run resumes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ptl_cli.engine.seeding import capture_rng, restore_rng
from ptl_cli.errors import UserError
from ptl_transfer import nets
from ptl_transfer.job import Job
from ptl_transfer.stages import Phase

#: The layout of the checkpoints below; a run resumes only from this one.
CHECKPOINT_VERSION = 1


def resume(job: Job) -> tuple[str | None, dict[str, Any] | None]:
    """Load the newest checkpoint when resuming: finished phases into ``job.done``; returns the
    running phase's name and state (or ``None, None``), and drops metrics written after it."""
    ctx = job.ctx
    saved = ctx.load_checkpoint()
    if saved is None:
        if ctx.resuming and ctx.dist.is_main:
            ctx.run.truncate_metrics(lambda record: False)  # no checkpoint yet: start over
        return None, None
    version = saved.get("version")
    if version != CHECKPOINT_VERSION:
        raise UserError(
            f"{ctx.run.path}: its checkpoint has layout version {version}, this ptl reads version "
            f"{CHECKPOINT_VERSION}; resume it with the ptl that wrote it, or start a new run"
        )
    job.done = dict(saved["done"])
    current, state = saved.get("phase"), saved.get("state")
    if ctx.dist.is_main:
        _truncate_metrics(ctx.run, job.done, current, state)
    return current, state


def checkpoint(job: Job, phase: Phase, step: int, state: dict[str, Any] | None) -> None:
    """The finished phases' results, and ``state`` of the running ``phase`` at ``step`` (or none)."""
    payload = {
        "version": CHECKPOINT_VERSION,
        "done": job.done,
        "phase": phase.name if state is not None else None,
        "state": state,
    }
    job.ctx.save_checkpoint(payload, phase.offset + step)


def _truncate_metrics(run: Any, done: dict[str, Any], current: str | None, state: Any) -> None:
    """Drop records written after the checkpoint (they will be written again)."""
    step = state["step"] if state is not None else -1

    def keep(record: dict[str, Any]) -> bool:
        stage = record.get("stage")
        return stage in done or (stage == current and record.get("step", 0) <= step)

    run.truncate_metrics(keep)


# -- the running phase's state ----------------------------------------------------------------
@dataclass
class Running:
    """What a training phase changes as it runs, saved by a checkpoint and restored on resume.

    ``model`` is the network itself (saved, followed by the EMA); ``train_model`` is what the
    step calls (a DDP or compiled wrapper of it); ``seconds`` were spent by earlier processes.
    """

    model: torch.nn.Module
    train_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    ema: nets.EMA | None = None
    algo: Any = None
    seconds: float = 0.0
    began: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.seconds + time.perf_counter() - self.began

    def save(self, job: Job, phase: Phase, step: int) -> None:
        """A checkpoint at ``step`` (after checking every rank holds the same weights)."""
        from ptl_cli.engine.sync import host_sync

        with host_sync("checkpoint"):  # state dicts (the loss scale, SSL state) are read here
            self._save(job, phase, step)

    def _save(self, job: Job, phase: Phase, step: int) -> None:
        job.in_sync(f"{phase.name} step {step}", self.model, self.ema.model if self.ema is not None else None)
        state = {
            "step": step,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ssl": self.algo.state_dict() if self.algo is not None else None,
            "precision": job.ctx.precision.state_dict(),
            "rng": capture_rng(),
            "seconds": self.elapsed(),
        }
        checkpoint(job, phase, step, state)

    def restore(self, job: Job, phase: Phase, state: dict[str, Any] | None) -> int:
        """Load a checkpointed state (or seed the phase's RNG); returns the step to continue at."""
        if state is None:
            torch.manual_seed(job.seed(phase.salt))
            return 0
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.algo is not None and state.get("ssl") is not None:
            self.algo.load_state_dict(state["ssl"])
        job.ctx.precision.load_state_dict(state.get("precision"))
        restore_rng(state["rng"])
        self.seconds = float(state.get("seconds", 0.0))
        job.ctx.say(f"{phase.name}: resuming at step {state['step']}")
        return int(state["step"])
