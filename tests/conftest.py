"""Shared test helpers: run the real CLI, and install throwaway plugin distributions."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ptl_cli.testing import install_plugin, run_ptl  # noqa: F401  (re-exported for tests)


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    """A site directory on sys.path and PYTHONPATH; the plugin manager is reloaded around the test."""
    import importlib

    from ptl_cli import plugins

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    importlib.invalidate_caches()
    plugins.reset()
    yield site
    plugins.reset()
    # forget the throwaway plugins' modules: a later test may install another one of the same name
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "") or "").startswith(str(site)):
            del sys.modules[name]


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Runs and caches of every test go to its own temporary directory, never the user's."""
    monkeypatch.setenv("PTL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def one_thread(monkeypatch):
    """One intra-op thread, here and in child processes: the suite shares two cores (oversubscribed
    OpenMP threads spin), and bit-exact comparisons across processes need one reduction order."""
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


def _sibling(stem: str):
    """Load ``tests/<stem>.py`` as a module: tests cannot import siblings (importlib mode)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"ptl_tests_{stem}", Path(__file__).with_name(f"{stem}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference():
    """``tests/reference.py``: loads single modules of reference code (e.g. semilearn's) without
    running their packages' heavy ``__init__``; a fixture because tests cannot import siblings."""
    return _sibling("reference")


@pytest.fixture(scope="session")
def tiny_diffusers():
    """``tests/tiny_diffusers.py``: builders of the tiny random diffusers models the tests share."""
    return _sibling("tiny_diffusers")
