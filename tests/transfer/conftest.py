"""Fixtures for the transfer tests: the bundled source models, tiny recipes, in-process runs.

Helpers are handed out through the ``tx`` fixture because tests run with
``--import-mode=importlib``, where a test module cannot import a sibling module.
Everything is real: the bundled coarse Fashion-MNIST BigGAN and classifier (top, trouser,
footwear, bag of train half A), the bundled pack's quickstart classes (tops and footwear, from
half B) as the target, real (tiny) target networks. Runs are made tiny by overriding the
quickstart recipe, so the tests also exercise the recipe users run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ptl_cli import plugins, recipes
from ptl_cli.engine.interrupt import InterruptGuard

TIME_KEYS = {"time", "pool_seconds"}


@pytest.fixture(scope="session")
def generator():
    return plugins.get("generators", "biggan").build("cpu", params={"weights": "bundled"})


@pytest.fixture(scope="session")
def classifier():
    return plugins.get("classifiers", "bundled").build("cpu")


@pytest.fixture(scope="session")
def target_images() -> tuple[torch.Tensor, torch.Tensor]:
    """40 real target images (the quickstart's target classes, 5 each) and their relabelled classes."""
    from ptl_cli.data.splits import per_class_split
    from ptl_transfer.target import select_classes

    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    target = select_classes(pack, quickstart_classes())
    index, _ = per_class_split(target.targets, 5, seed=0)
    return target.images[index], target.targets[index]


def quickstart_classes() -> list[int]:
    """The target classes of the quickstart recipe (8 fine classes: tops and footwear)."""
    return recipes.load_raw("transfer-quickstart")[0]["target"]["classes"]


def tiny_recipe(pool_dir: Path, **sets: Any) -> dict[str, Any]:
    """The quickstart recipe shrunk to seconds (every other key as the user gets it), in one
    process: these runs are driven in this process (``run_transfer``); the stages side by side in
    child processes (``stage_processes``) have their own tests."""
    data, _ = recipes.load_raw("transfer-quickstart")
    small = {
        "model.arch": "conv2",
        "model.width": 0.25,
        "target.labels_per_class": 4,
        "pool.dir": str(pool_dir),
        "pool.shard_size": 32,
        "pool.gen_batch_size": 16,
        "pp.samples": 64,
        "pp.train.steps": 6,
        "pp.train.batch_size": 16,
        "pp.train.log_every": 2,
        "pp.train.checkpoint_every": 2,
        "pcs.per_image": 3,
        "ssl.mu": 2,
        "train.steps": 6,
        "train.batch_size": 8,
        "train.log_every": 2,
        "train.checkpoint_every": 2,
        "compute.device": "cpu",
        "stage_processes": 1,
    }
    for key, value in {**small, **sets}.items():
        recipes.set_dotted(data, key, value, "test")
    return data


class StopAfter(InterruptGuard):
    """An interrupt that arrives at the ``polls``-th ``ctx.should_stop()`` (a SIGTERM stand-in)."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.polls = polls

    @property
    def requested(self) -> str | None:
        self.polls -= 1
        return "SIGTERM" if self.polls < 0 else None

    @requested.setter
    def requested(self, value: str | None) -> None:
        """InterruptGuard.__init__ sets it; the countdown decides instead."""


def run_transfer(data: dict[str, Any], out: Path, stop_after: int | None = None, resuming: bool = False):
    """Run (or resume) the transfer workflow in this process, as ``launch.execute`` does.

    Returns the final metrics, or None when ``stop_after`` interrupted the run.
    """
    from rich.console import Console

    from ptl_cli.engine.checkpoint import CheckpointStore
    from ptl_cli.engine.context import RunContext
    from ptl_cli.engine.device import Precision
    from ptl_cli.engine.interrupt import Interrupted
    from ptl_cli.engine.progress import Progress
    from ptl_cli.engine.seeding import seed_everything
    from ptl_cli.runs import Run

    spec = plugins.get("workflows", "transfer")
    resolved = recipes.validate(data, spec.params, "test recipe")
    run = Run(out) if resuming else Run.create("transfer", "test", resolved.data, str(out))
    seed_everything(resolved.model.seed)
    console = Console(quiet=True)
    device = torch.device("cpu")
    ctx = RunContext(
        run=run,
        recipe=resolved.model,
        device=device,
        precision=Precision("fp32", device),
        console=console,
        progress=Progress(console, enabled=False),
        checkpoints=CheckpointStore(run.checkpoint_dir, warn=lambda m: None),
        guard=StopAfter(stop_after) if stop_after is not None else InterruptGuard(),
        resuming=resuming,
        quiet=True,
    )
    workflow = spec.load_factory()()
    try:
        metrics = workflow.run(ctx)
    except Interrupted:
        run.set_status("interrupted")
        return None
    finally:
        run.release()  # as a ptl command does when it ends: `ptl resume` in a subprocess may take it
    run.set_status("completed", metrics=metrics)
    return metrics


def records(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without wall-clock fields (the only thing resume may change)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def without_seconds(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.endswith("seconds")}


def make_job(data: dict[str, Any], run_dir: Path):
    """A :class:`ptl_transfer.job.Job` for ``data`` outside any run: enough to ask it for its
    pools' keys and its models (stage files are read from ``run_dir/stages``)."""
    from types import SimpleNamespace

    from ptl_transfer.job import Job

    spec = plugins.get("workflows", "transfer")
    recipe = recipes.validate(data, spec.params, "test recipe").model
    return Job(SimpleNamespace(recipe=recipe, device=torch.device("cpu"), run=SimpleNamespace(path=run_dir)))


class Helpers:
    """What ``tx`` hands to tests."""

    tiny_recipe = staticmethod(tiny_recipe)
    quickstart_classes = staticmethod(quickstart_classes)
    make_job = staticmethod(make_job)
    run_transfer = staticmethod(run_transfer)
    records = staticmethod(records)
    without_seconds = staticmethod(without_seconds)


@pytest.fixture(scope="session")
def tx() -> type[Helpers]:
    return Helpers
