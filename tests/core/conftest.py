"""Fixtures of the core tests: the throwaway ``demo`` workflow plugin, and running ``ptl`` in-process."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ptl_cli.testing import install_plugin

DEMO_SOURCE = Path(__file__).with_name("demo_workflow.py")


@pytest.fixture
def demo_site(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The ``demo`` workflow plugin installed (entry point and all) with its default recipe."""
    install_plugin(plugin_site, "ptl-demo", "ptl_demo", DEMO_SOURCE.read_text(), version="0.0.1")
    recipes = plugin_site / "recipes"
    recipes.mkdir()
    (recipes / "demo-default.toml").write_text('kind = "demo"\ndescription = "the demo workflow"\nseed = 5\n')
    monkeypatch.setenv("PTL_RECIPE_PATH", str(recipes))
    return plugin_site


@pytest.fixture
def one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """One intra-op thread here and in child processes: bit-exact comparisons across processes
    need the same reduction order, and the CPU is shared with other test suites."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the ``ptl`` CLI in this process: ``cli(*args) -> (exit status, stdout, stderr)``."""
    from ptl_cli.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


@pytest.fixture
def show(cli: Callable[..., tuple[int, str, str]]) -> Callable[[Path], dict]:
    """``show(run)``: ``ptl runs show RUN --json``, parsed."""

    def run_show(run: Path) -> dict:
        code, out, err = cli("runs", "show", run, "--json")
        assert code == 0, err
        return json.loads(out)

    return run_show
