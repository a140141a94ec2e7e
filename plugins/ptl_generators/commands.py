"""``ptl generate`` and ``ptl train-source``. Light at import: torch loads inside the commands."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ptl_cli import options
from ptl_cli.errors import UserError

DEFAULT_RECIPES = {
    "biggan": "biggan-fashion04",
    "ddpm": "ddpm-fashion04",
    "classifier": "classifier-fashion04",
}

Dataset = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--dataset", "-d", help="Dataset plugin (recipe data.dataset)."),
]
Classes = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--classes", help="Comma-separated class indices to train on, e.g. 0,1,2,3,4."),
]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Training steps (recipe train.steps).")]  # noqa: UP045
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="Where the dataset lives.")]  # noqa: UP045


def parse_classes(text: str | None) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--classes {text!r}: expected comma-separated class indices, e.g. 0,1,2") from None


def parse_soft(text: str, num_classes: int) -> list[float]:
    """``"3:0.7,5:0.3"`` -> a probability row over ``num_classes`` (must sum to 1)."""
    row = [0.0] * num_classes
    try:
        for part in text.split(","):
            cls, weight = part.split(":")
            row[int(cls)] += float(weight)
    except (ValueError, IndexError):
        raise UserError(
            f"--soft {text!r}: expected class:weight pairs over classes 0..{num_classes - 1}, "
            "e.g. 3:0.7,5:0.3"
        ) from None
    total = sum(row)
    if min(row) < 0 or abs(total - 1.0) > 1e-3:
        raise UserError(f"--soft {text!r}: weights must be non-negative and sum to 1 (they sum to {total:g})")
    return row


def _params(items: list[str] | None) -> dict[str, Any]:
    from ptl_cli.recipes import parse_set

    out: dict[str, Any] = {}
    for item in items or []:
        key, value = parse_set(item)
        out[key] = value
    return out


def generate(
    generator: Annotated[
        str, typer.Option("--generator", "-g", help="Generator name (see `ptl list generators`).")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="PNG file to write.")] = "grid.png",
    classes: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--classes", help="Comma-separated class indices, one row each (default: up to 10)."),
    ] = None,
    soft: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--soft", help="Extra row conditioned on a class mix, e.g. '3:0.7,5:0.3' (repeatable)."),
    ] = None,
    per_class: Annotated[int, typer.Option("--per-class", "-n", help="Samples per row.")] = 8,
    param: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--param", "-p", help="Generator parameter key=value, e.g. truncation=0.5 (repeatable)."
        ),
    ] = None,
    classifier: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--classifier", help="Source classifier that labels each row with its mean prediction."),
    ] = None,
    seed: options.Seed = None,
    device: options.Device = None,
) -> None:
    """Write a labeled grid of samples (one row per class, plus soft-conditioned rows)."""
    import torch

    from ptl_cli import plugins
    from ptl_cli.engine.device import resolve_device
    from ptl_generators.grid import save_grid

    dev = resolve_device(device or "auto")
    gen = plugins.get("generators", generator).build(
        dev, params=_params(param), where=f"generator {generator}"
    )
    wanted = parse_classes(classes)
    if wanted is None:
        wanted = list(range(min(gen.num_classes, 10)))
    bad = [c for c in wanted if not 0 <= c < gen.num_classes]
    if bad:
        raise UserError(
            f"--classes: {bad} not in 0..{gen.num_classes - 1} ({generator} has {gen.num_classes} classes)"
        )
    clf = (
        plugins.get("classifiers", classifier).build(dev, where=f"classifier {classifier}")
        if classifier
        else None
    )
    rng = torch.Generator().manual_seed(seed or 0)
    rows, labels = [], []
    for c in wanted:
        rows.append(gen.sample(torch.full((per_class,), c, dtype=torch.long), generator=rng).cpu())
        labels.append(f"{c}: {gen.class_names[c]}")
    for text in soft or []:
        row = parse_soft(text, gen.num_classes)
        y = torch.tensor(row).expand(per_class, -1).contiguous()
        rows.append(gen.sample(y, generator=rng).cpu())
        labels.append(f"soft {text}")
    if clf is not None:
        for i, images in enumerate(rows):
            probs = torch.softmax(clf(images.to(dev)), 1).mean(0).cpu()
            top = probs.topk(min(2, probs.numel()))
            guess = ", ".join(
                f"{clf.class_names[j]} {p:.2f}" for p, j in zip(top.values, top.indices, strict=True)
            )
            labels[i] += f"  [{guess}]"
    save_grid(rows, labels, out)
    typer.echo(f"wrote {out} ({len(rows)} rows × {per_class}, {gen.id})")


@options.with_common
def train_generator(
    kind: Annotated[str, typer.Option("--kind", "-k", help="biggan | ddpm")] = "biggan",
    dataset: Dataset = None,
    classes: Classes = None,
    steps: Steps = None,
    data_dir: DataDir = None,
    *,
    common: options.Common,
) -> None:
    """Train a class-conditional generator (BigGAN-style GAN or DDPM) on your own data."""
    if kind not in ("biggan", "ddpm"):
        raise UserError(f"--kind {kind!r}: choose biggan or ddpm")
    _launch(common, kind, dataset, classes, steps, data_dir)


@options.with_common
def train_classifier(
    dataset: Dataset = None,
    classes: Classes = None,
    steps: Steps = None,
    data_dir: DataDir = None,
    arch: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--arch", help="Model plugin (recipe classifier.arch)."),
    ] = None,
    *,
    common: options.Common,
) -> None:
    """Train a source classifier on your own data."""
    _launch(common, "classifier", dataset, classes, steps, data_dir, {"classifier.arch": arch})


def _launch(
    common: options.Common,
    model: str,
    dataset: str | None,
    classes: str | None,
    steps: int | None,
    data_dir: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    from ptl_cli.launch import launch

    overrides = {
        "model": model,
        "data.dataset": dataset,
        "data.classes": parse_classes(classes),
        "data.data_dir": data_dir,
        "train.steps": steps,
        **(extra or {}),
    }
    launch("train-source", common, DEFAULT_RECIPES[model], overrides)


def add(app: Any) -> None:
    app.command("generate")(generate)
    train = typer.Typer(
        help="Train source models (generator or classifier) on data you own.", no_args_is_help=True
    )
    train.command("generator")(train_generator)
    train.command("classifier")(train_classifier)
    app.add_typer(train, name="train-source")
