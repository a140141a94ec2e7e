"""A throwaway ``demo`` workflow plugin for the core's run tests (installed by ``conftest.py``).

It is the smallest real training run the engine can host: a two-layer MLP trained with SGD on
real images from a dataset plugin (the bundled Fashion-MNIST pack by default), batches drawn
from torch's global RNG and flipped on the fly, checkpoints every ``checkpoint_every`` steps and
on SIGINT/SIGTERM, metrics logged every step, test accuracy at the end. Everything a run can go
through — interruption, resume, a corrupt checkpoint, a NaN loss, missing data — goes through
the core exactly as for the built-in workflows.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

import typer
from pydantic import Field, field_validator

from ptl_cli import hookimpl, options
from ptl_cli.recipes import RecipeBase
from ptl_cli.schema import Params


class Data(Params):
    dataset: str = "fashion-pack"
    data_dir: str | None = None
    download: bool = False
    limit: int = Field(512, ge=32, description="training images used")

    @field_validator("dataset")
    @classmethod
    def _known(cls, name: str) -> str:
        from ptl_cli import plugins

        plugins.get("datasets", name)  # unknown names fail at validation, before any run exists
        return name


class Train(Params):
    steps: int = Field(12, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0)
    checkpoint_every: int = Field(3, ge=1)
    sleep: float = Field(0.0, ge=0, description="seconds per step: room to send a signal")
    stop_at: int = Field(
        0, ge=0, description="act as if SIGTERM arrived at this step (a fresh run's only: not on resume)"
    )
    nan_at: int = Field(0, ge=0, description="make the loss NaN at this step")


class DemoRecipe(RecipeBase):
    kind: Literal["demo"] = "demo"
    data: Data = Data()
    train: Train = Train()


class DemoWorkflow:
    def plan(self, recipe: DemoRecipe) -> list[tuple[str, str]]:
        return [("dataset", recipe.data.dataset), ("steps", str(recipe.train.steps))]

    def run(self, ctx: Any) -> dict[str, Any]:
        import time

        import torch
        import torch.nn.functional as F

        from ptl_cli import atomic, plugins
        from ptl_cli.data import augment
        from ptl_cli.data.base import normalize, to_float
        from ptl_cli.engine.interrupt import Interrupted
        from ptl_cli.engine.seeding import capture_rng, restore_rng

        r, t = ctx.recipe, ctx.recipe.train
        spec = plugins.get("datasets", r.data.dataset)
        train = spec.build(r.data.data_dir, "train", r.data.download)
        test = spec.build(r.data.data_dir, "test", r.data.download)
        images, labels = train.images[: r.data.limit], train.targets[: r.data.limit]
        info = train.info
        model = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=0.9)
        step = 0
        state = ctx.load_checkpoint()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step = state["step"]
            restore_rng(state["rng"])
            ctx.run.truncate_metrics(lambda rec: rec.get("step", 0) <= step)

        def save() -> None:
            ctx.save_checkpoint(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "rng": capture_rng(),
                },
                step,
            )

        with ctx.progress.task("demo", total=t.steps, completed=step) as advance:
            while step < t.steps:
                index = torch.randint(0, images.shape[0], (t.batch_size,))
                x = augment.random_flip(normalize(to_float(images[index]), info.mean, info.std))
                loss = F.cross_entropy(model(x), labels[index])
                if step + 1 == t.nan_at:
                    loss = loss * float("nan")
                ctx.check_finite(loss, f"step {step + 1}")
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                ctx.log(step=step, stage="train", loss=loss)
                advance(loss=loss.item())
                if t.sleep:
                    time.sleep(t.sleep)
                if step == t.stop_at and not ctx.resuming:
                    ctx.guard.requested = "SIGTERM"
                stop = ctx.should_stop()
                if stop or step % t.checkpoint_every == 0:
                    save()
                if stop:
                    raise Interrupted()
        with torch.no_grad():
            logits = model(normalize(to_float(test.images), info.mean, info.std))
            test_acc = float((logits.argmax(1) == test.targets).float().mean())
        ctx.log(step=step, stage="test", test_acc=test_acc)
        atomic.torch_save({"model": model.state_dict()}, ctx.run.path / "final.pt")
        return {"test_acc": test_acc, "steps": step}

    def results_table(self, run: Any) -> tuple[list[str], list[list[Any]]]:
        metrics = run.info()["metrics"]
        return ["result", "value"], [["test accuracy", metrics["test_acc"]], ["steps", metrics["steps"]]]


@options.with_common
def demo(
    dataset: Annotated[Optional[str], typer.Option(help="Dataset.")] = None,  # noqa: UP045
    data_dir: Annotated[Optional[str], typer.Option(help="Where the dataset is.")] = None,  # noqa: UP045
    *,
    common: options.Common,
) -> None:
    """Train a tiny MLP (a test workflow)."""
    from ptl_cli.launch import launch

    launch("demo", common, "demo-default", {"data.dataset": dataset, "data.data_dir": data_dir})


@hookimpl
def ptl_register_workflows(register: Any) -> None:
    register("demo", "ptl_demo:DemoWorkflow", description="a tiny MLP on real images", params=DemoRecipe)


@hookimpl
def ptl_register_commands(app: Any) -> None:
    app.command("demo")(demo)
