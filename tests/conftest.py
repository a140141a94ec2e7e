"""Shared test helpers: run the real CLI, and install throwaway plugin distributions."""

from __future__ import annotations

import os
import sys

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
