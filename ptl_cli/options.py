"""Options every run command shares, as ``Annotated`` types plugin commands put in signatures.

A run command takes them with :func:`with_common`: it declares its own flags and a keyword
``common: options.Common``, and the decorator adds ``--recipe``, ``--set``, ``--device``,
``--seed``, ``--out``, ``--dry-run``, ``--json``, ``--quiet``, ``--log-every-s`` and ``--log``
after them, handing their values over as one :class:`Common` for :func:`ptl_cli.launch.launch`.
A command that needs them otherwise (another ``--recipe``, another order) declares
``recipe: options.Recipe = None, ...`` itself and builds the :class:`Common`.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Optional, TypeVar

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
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, log lines or chatter.")]
LogEvery = Annotated[
    float,
    typer.Option(
        "--log-every-s",
        metavar="<seconds>",
        min=0,
        help="Off a terminal (a file, Slurm, nohup): a progress line this often, and at each "
        "stage's start and end.",
    ),
]
Log = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--log", metavar="<name[,name]>", help="Experiment loggers, e.g. tensorboard,mlflow,wandb."),
]


#: ``{choices:ssl}`` in a flag's help: the registered names of that kind, filled in only when help
#: is shown (:func:`fill_choices`), so that starting ptl never builds the registries for it.
CHOICES = re.compile(r"\{choices:(\w+)\}")


def fill_choices(text: str) -> str:
    """``"SSL algorithm: {choices:ssl}."`` -> ``"SSL algorithm: fixmatch, uda, ... (`ptl list ssl`)."``:
    one source for help and ``ptl list``, plugins' components included."""
    return CHOICES.sub(lambda m: _names(m.group(1)), text)


def _names(kind: str) -> str:
    from ptl_cli import plugins

    try:
        names = [spec.name.replace(":*", ":NAME") for spec in plugins.manager().registry(kind)]
    except Exception:  # noqa: BLE001 - a broken plugin must not break --help
        names = []
    shown = ", ".join(names[:24]) + (", ..." if len(names) > 24 else "")
    return f"{shown} (see `ptl list {kind}`)" if shown else f"see `ptl list {kind}`"


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
    log_every_s: float = 30.0
    log: list[str] | None = None  # ``[compute] log``: the recipe's loggers when None


_SHARED = {
    "recipe": Recipe,
    "sets": Sets,
    "device": Device,
    "seed": Seed,
    "out": Out,
    "dry_run": DryRun,
    "json": Json,
    "quiet": Quiet,
    "log_every_s": LogEvery,
    "log": Log,
}  # each is a field of Common, whose default is the option's, in the order help lists them

R = TypeVar("R")


def with_common(command: Callable[..., R]) -> Callable[..., R]:
    """``command`` with the shared options added to its signature, after its own, and passed to it
    as ``common=Common(...)`` (``--log a,b`` split into names). For Typer, which reads the signature.

    ``command`` must take a ``common`` parameter and none named like a shared option.
    """
    signature = inspect.signature(command, eval_str=True)
    if "common" not in signature.parameters:
        raise TypeError(f"{command.__qualname__}: a command under with_common takes `common: options.Common`")
    clash = sorted(set(signature.parameters) & set(_SHARED))
    if clash:
        raise TypeError(f"{command.__qualname__}: with_common adds {', '.join(clash)} itself")
    defaults = {f.name: f.default for f in fields(Common)}
    own = [p for name, p in signature.parameters.items() if name != "common"]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults[name], annotation=annotation)
        for name, annotation in _SHARED.items()
    ]

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> R:
        values = {name: kwargs.pop(name, defaults[name]) for name in _SHARED}
        values["log"] = log_names(values["log"])
        return command(*args, **kwargs, common=Common(**values))

    run.__signature__ = signature.replace(parameters=own + shared)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in own + shared}
    if signature.return_annotation is not inspect.Signature.empty:
        run.__annotations__["return"] = signature.return_annotation
    return run
