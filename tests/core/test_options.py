"""``options.with_common``: the shared run options a plugin command gets without declaring them."""

from __future__ import annotations

from typing import Annotated, Optional

import pytest
import typer
from typer.testing import CliRunner

from ptl_cli import options


def _app(received: list) -> typer.Typer:
    app = typer.Typer()

    @options.with_common
    def hello(
        steps: Annotated[Optional[int], typer.Option(help="Steps.")] = None,  # noqa: UP045
        *,
        common: options.Common,
    ) -> None:
        """Say hello."""
        received.append((steps, common))

    app.command("hello")(hello)
    app.command("other")(lambda: None)  # a second command keeps "hello" a subcommand
    return app


def test_shared_options_arrive_as_one_common():
    received: list = []
    result = CliRunner().invoke(
        _app(received),
        ["hello", "--steps", "3", "-r", "r.toml", "-s", "a=1", "-s", "b=2", "--seed", "7", "--out", "o"]
        + ["--device", "cpu", "--dry-run", "--json", "--quiet", "--log", "tensorboard, wandb"],
    )
    assert result.exit_code == 0, result.output
    steps, common = received[0]
    assert steps == 3
    assert common == options.Common(
        recipe="r.toml",
        sets=["a=1", "b=2"],
        device="cpu",
        seed=7,
        out="o",
        dry_run=True,
        json=True,
        quiet=True,
        log=["tensorboard", "wandb"],
    )


def test_defaults_are_commons_and_help_lists_own_flags_first():
    received: list = []
    app = _app(received)
    assert CliRunner().invoke(app, ["hello"]).exit_code == 0
    assert received == [(None, options.Common())]
    text = CliRunner().invoke(app, ["hello", "--help"], env={"COLUMNS": "200"}).output
    flags = ["--steps", "--recipe", "--set", "--device", "--seed", "--out", "--dry-run", "--json"]
    flags += ["--quiet", "--log"]
    positions = [text.index(f) for f in flags]
    assert positions == sorted(positions), text
    assert "Say hello." in text


def test_a_command_without_common_or_with_a_clashing_flag_is_refused():
    def no_common(steps: int = 0) -> None: ...

    def clash(out: str = "x", *, common: options.Common) -> None: ...

    with pytest.raises(TypeError, match="takes `common"):
        options.with_common(no_common)
    with pytest.raises(TypeError, match="adds out itself"):
        options.with_common(clash)
