"""Options every run command shares, as ``Annotated`` types plugin commands put in signatures.

A plugin's command declares ``recipe: options.Recipe = None, sets: options.Sets = None, ...``
and passes them to :func:`ptl_cli.launch.launch` as a :class:`Common`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer

# Metavars say what a value looks like (``--set <key.path=value>``), not its Python type.
Recipe = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--recipe", "-r", metavar="<name|file>", help="Recipe name or TOML file."),
]
Sets = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--set",
        "-s",
        metavar="<key.path=value>",
        help="Override a recipe key, e.g. train.lr=0.1 (repeatable).",
    ),
]
Device = Annotated[Optional[str], typer.Option(metavar="<device>", help="auto | cpu | cuda[:i] | mps")]  # noqa: UP045
Seed = Annotated[Optional[int], typer.Option(help="Random seed (recipe `seed`).")]  # noqa: UP045
Out = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--out", "-o", metavar="<dir>", help="Run directory to create (new or empty)."),
]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Resolve and print the plan; run nothing.")]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")]
Log = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--log", metavar="<name[,name]>", help="Experiment loggers, e.g. tensorboard,mlflow,wandb."),
]


def log_names(text: str | None) -> list[str] | None:
    """``--log tensorboard,wandb`` -> ``["tensorboard", "wandb"]`` (None when not given)."""
    names = [n.strip() for n in (text or "").split(",") if n.strip()]
    return names or None


@dataclass
class Common:
    """The shared options as one value, handed to :func:`ptl_cli.launch.launch`."""

    recipe: str | None = None
    sets: list[str] | None = None
    device: str | None = None
    seed: int | None = None
    out: str | None = None
    dry_run: bool = False
    json: bool = False
    quiet: bool = False
    log: list[str] | None = None  # ``[compute] log``: the recipe's loggers when None
