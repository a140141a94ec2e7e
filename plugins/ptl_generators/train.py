"""The ``train-source`` workflow: train a source generator or classifier on data you own.

One loop for the three model kinds, readable top to bottom: draw a batch from a resumable
sampler, call the method's ``step`` (``train_biggan``, ``train_ddpm``, ``train_classifier`` hold
one method each), log, checkpoint, stop cleanly on a signal. At the end the trained model is
written as a single ``RUN/model.safetensors`` (the same format as the bundled models), its
quality is measured with the same loaders users call (``biggan``/``diffusers`` generators,
``checkpoint`` classifier), and a sample grid and a model card stub are written beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ptl_generators.params import TrainSourceRecipe

MODEL_FILE = "model.safetensors"


def _trainer_class(model: str):
    if model == "biggan":
        from ptl_generators.train_biggan import BigGANTrainer

        return BigGANTrainer
    if model == "ddpm":
        from ptl_generators.train_ddpm import DDPMTrainer

        return DDPMTrainer
    from ptl_generators.train_classifier import ClassifierTrainer

    return ClassifierTrainer


def load_data(recipe: TrainSourceRecipe, split: str):
    """The dataset split, restricted to ``data.classes`` (relabelled 0..K-1)."""
    from ptl_cli import plugins

    spec = plugins.get("datasets", recipe.data.dataset)
    data = spec.build(
        recipe.data.data_dir,
        split,
        recipe.data.download,
        params=recipe.data.dataset_params,
        where=f"recipe data.dataset_params ({recipe.data.dataset})",
    )
    if recipe.data.classes:
        data = select_classes(data, recipe.data.classes)
    return data


def select_classes(data, classes: list[int]):
    """Keep ``classes`` relabelled 0..K-1 in that order, with a recipe-level error for bad ones."""
    from ptl_cli.errors import UserError

    bad = [c for c in classes if not 0 <= c < data.info.num_classes]
    if bad:
        raise UserError(f"data.classes {bad}: {data.info.name} has classes 0..{data.info.num_classes - 1}")
    return data.select_classes(classes)


def check(recipe: TrainSourceRecipe) -> None:
    """The names and parameters a run would refuse (its dataset, the classifier's architecture,
    the scoring classifier), in the run's words; no torch, no data (``plan`` runs it, so a
    real run checks them before it trains, not only at its end)."""
    from ptl_cli import plugins

    d = recipe.data
    dataset = plugins.get("datasets", d.dataset)
    dataset.validate_params(d.dataset_params, f"recipe data.dataset_params ({d.dataset})")
    _check_sizes(recipe, dataset)
    if recipe.model == "classifier":
        c = recipe.classifier
        arch = plugins.get("models", c.arch)
        arch.validate_params(c.arch_params, "recipe classifier.arch_params", {"width": c.width})
    elif recipe.eval.classifier not in ("", "none"):
        scorer = plugins.get("classifiers", recipe.eval.classifier)
        scorer.validate_params(recipe.eval.classifier_params, "recipe eval.classifier_params")


def _check_sizes(recipe: TrainSourceRecipe, dataset: Any) -> None:
    """Classes and image sizes the dataset cannot have, when it is known without its files
    (:mod:`ptl_datasets.facts`); in the words the run uses when it finds them in the data."""
    from ptl_cli.errors import UserError

    facts = dataset.facts(recipe.data.dataset_params, f"recipe data.dataset_params ({dataset.name})")
    if facts is None:
        return
    bad = [c for c in recipe.data.classes or [] if not 0 <= c < facts.num_classes]
    if bad:
        raise UserError(f"data.classes {bad}: {dataset.name} has classes 0..{facts.num_classes - 1}")
    size = facts.image_size
    if recipe.model == "biggan":
        b = recipe.biggan
        ups = sum(1 for up, _, _ in b.layers if up)
        if b.bottom_width * 2**ups != size:
            raise UserError(
                f"biggan: bottom_width {b.bottom_width} with {sum(u for u, _, _ in b.layers)} upsampling "
                f"blocks gives {b.bottom_width * 2**ups}px images, but {dataset.name} has {size}px"
            )
    if recipe.model == "ddpm" and size % recipe.ddpm.patch:
        raise UserError(f"ddpm.patch {recipe.ddpm.patch} must divide the image size {size}")


class TrainSourceWorkflow:
    def plan(self, recipe: TrainSourceRecipe) -> list[tuple[str, str]]:
        check(recipe)
        classes = recipe.data.classes if recipe.data.classes else "all"
        rows = [
            ("train", recipe.model),
            ("data", f"{recipe.data.dataset} train split, classes {classes}"),
            ("schedule", f"{recipe.train.steps} steps × batch {recipe.train.batch_size}"),
            ("checkpoints", f"every {recipe.train.checkpoint_every} steps"),
        ]
        section = getattr(recipe, recipe.model)
        rows.append((recipe.model, ", ".join(f"{k}={v}" for k, v in section.model_dump().items())))
        if recipe.model != "classifier":
            rows.append(("quality", f"agreement by source classifier {recipe.eval.classifier!r}"))
        else:
            rows.append(("quality", "test accuracy on the test split"))
        rows.append(("output", f"RUN/{MODEL_FILE} (single file, config in metadata) + RUN/model.md"))
        return rows

    def run(self, ctx) -> dict[str, Any]:
        import torch

        from ptl_cli.data.base import to_float
        from ptl_cli.data.sampler import ResumableSampler
        from ptl_cli.engine.interrupt import Interrupted
        from ptl_cli.engine.seeding import capture_rng, restore_rng

        recipe: TrainSourceRecipe = ctx.recipe
        loop = recipe.train
        if loop.threads:
            torch.set_num_threads(loop.threads)
        data = load_data(recipe, "train")
        if len(data) < loop.batch_size:
            from ptl_cli.errors import UserError

            raise UserError(
                f"{recipe.data.dataset}: {len(data)} training images, fewer than train.batch_size "
                f"{loop.batch_size}; lower --set train.batch_size"
            )
        trainer = _trainer_class(recipe.model)(recipe, data.info, ctx.device)
        sampler = ResumableSampler(len(data), seed=recipe.seed, shuffle=True, drop_last=True)
        per_epoch = len(data) // loop.batch_size
        step = 0
        state = ctx.load_checkpoint()
        if state is not None:
            trainer.load_state_dict(state["trainer"])
            step = int(state["step"])
            restore_rng(state["rng"])
            ctx.run.truncate_metrics(lambda r: r.get("step", 0) <= step)
            ctx.say(f"resumed at step {step}")

        def save(at: int) -> None:
            ctx.save_checkpoint({"trainer": trainer.state_dict(), "step": at, "rng": capture_rng()}, at)

        order: list[int] = []
        epoch_of_order = -1
        with ctx.progress.task(f"train {recipe.model}", total=loop.steps, completed=step) as advance:
            while step < loop.steps:
                if ctx.should_stop():
                    save(step)
                    raise Interrupted
                epoch, index = divmod(step, per_epoch)
                if epoch != epoch_of_order:  # the epoch's permutation depends on (seed, epoch) only
                    sampler.set_epoch(epoch)
                    order = list(sampler)
                    epoch_of_order = epoch
                idx = torch.as_tensor(order[index * loop.batch_size : (index + 1) * loop.batch_size])
                images, labels = data.images[idx], data.targets[idx]
                images = to_float(images.to(ctx.device, non_blocking=True))
                logs = trainer.step(images, labels.to(ctx.device), step, loop.steps)
                step += 1
                advance(1)
                if step % loop.log_every == 0 or step == loop.steps:
                    values = {k: float(v) for k, v in logs.items()}
                    ctx.check_finite(sum(values.values()), f"step {step}")
                    ctx.log(step=step, epoch=epoch, stage=recipe.model, **values)
                if step % loop.checkpoint_every == 0 or step == loop.steps:
                    save(step)
        return self._finish(ctx, recipe, trainer)

    def _finish(self, ctx, recipe: TrainSourceRecipe, trainer) -> dict[str, Any]:
        from ptl_generators import weights as W

        ctx.say("finalizing and measuring quality")
        trainer.finalize(seed=recipe.seed)
        tensors, meta = trainer.export()
        meta = {**meta, "recipe": recipe.model_dump(mode="json"), "ptl_run": ctx.run.path.name}
        out = ctx.run.path / MODEL_FILE
        W.save_single(out, tensors, meta)
        test = load_data(recipe, "test") if recipe.model == "classifier" else None
        metrics = trainer.evaluate(out, ctx.device, recipe, test)
        grid = ctx.run.path / "samples.png"
        if recipe.model != "classifier" and trainer.write_grid(out, ctx.device, grid):
            metrics["grid"] = grid.name
        (ctx.run.path / "metrics.json").write_text(json.dumps(metrics, indent=2))
        ctx.log(step=recipe.train.steps, stage="final", **{k: v for k, v in metrics.items() if _scalar(v)})
        return metrics

    def results_table(self, run) -> tuple[list[str], list[list[Any]]]:
        metrics = run.info().get("metrics", {})
        rows = [[k, v] for k, v in metrics.items() if _scalar(v)]
        return ["metric", "value"], rows

    def export(self, run, fmt: str, out: str | None, verify: bool) -> list[str]:
        """``safetensors`` (ptl single file, default for ``pt`` too) or ``dir`` (published layout)."""
        import shutil

        from ptl_cli.errors import UserError

        source = Path(run.path) / MODEL_FILE
        if not source.is_file():
            raise UserError(f"{run.path} has no {MODEL_FILE}; the run has not completed")
        if fmt in ("safetensors", "pt"):
            target = Path(out or f"{run.path.name}.safetensors")
            shutil.copyfile(source, target)
            lines = [f"wrote {target} (load it with weights={target})"]
        elif fmt == "dir":
            from ptl_generators.export import export_directory

            target = Path(out or run.path.name)
            lines = export_directory(source, target)
        else:
            raise UserError(f"unknown export format {fmt!r} for train-source runs; use safetensors or dir")
        if verify:
            from ptl_generators.export import verify_export

            lines.append(verify_export(source, target))
        return lines


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
