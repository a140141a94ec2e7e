"""Options every run command shares, as ``Annotated`` types plugin commands put in signatures.

A plugin's command declares ``recipe: options.Recipe = None, sets: options.Sets = None, ...``
and passes them to :func:`ptl_cli.launch.launch` as a :class:`Common`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Optional

import typer

Recipe = Annotated[Optional[str], typer.Option("--recipe", "-r", help="Recipe name or TOML file.")]  # noqa: UP045
Sets = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--set", "-s", help="Override a recipe key: key.path=value (repeatable)."),
]
Device = Annotated[Optional[str], typer.Option(help="auto | cpu | cuda[:i] | mps")]  # noqa: UP045
Seed = Annotated[Optional[int], typer.Option(help="Random seed (recipe `seed`).")]  # noqa: UP045
Out = Annotated[Optional[str], typer.Option("--out", "-o", help="Run directory to create.")]  # noqa: UP045
DryRun = Annotated[bool, typer.Option("--dry-run", help="Resolve and print the plan; run nothing.")]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or chatter.")]


@dataclass
class Common:
    recipe: str | None = None
    sets: list[str] | None = None
    device: str | None = None
    seed: int | None = None
    out: str | None = None
    dry_run: bool = False
    json: bool = False
    quiet: bool = False
