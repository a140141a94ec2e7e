"""Fixtures of the plugin tests: the example plugin, pip-installed into a directory of its own."""

from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest

from ptl_cli.testing import pip_install

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ptl-example"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """``examples/ptl-example`` installed with pip (``--target``, offline, no deps) once per session.

    The source is copied first so that the build leaves nothing in the repository, and the
    target directory is only visible to tests that ask for it (``with_example``).
    """
    root = tmp_path_factory.mktemp("ptl-example")
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    return pip_install(source, target=root / "site")


@pytest.fixture
def with_example(example_site, monkeypatch):
    """The example plugin installed for this test, in-process and for ``run_ptl`` subprocesses."""
    from ptl_cli import plugins

    monkeypatch.syspath_prepend(str(example_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(example_site), os.environ.get("PYTHONPATH", "")]))
    importlib.invalidate_caches()
    plugins.reset()
    yield example_site
    plugins.reset()
