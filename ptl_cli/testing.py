"""Helpers for testing ptl and ptl plugins: run the real CLI, install throwaway plugin packages.

Plugin authors use these in their own test suites (see docs/plugins/testing.md)::

    from ptl_cli.testing import run_ptl
    result = run_ptl("list", "pruners", "--json")
    assert result.returncode == 0
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_ptl(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run ``python -m ptl_cli ARGS`` in a subprocess, as a user would run ``ptl``."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ptl_cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def install_plugin(
    site: Path, dist: str, module: str, source: str, version: str = "1.2.3", entry: str | None = None
) -> Path:
    """Create an installed distribution in ``site``: a module plus a dist-info with an entry point.

    This is what ``pip install`` leaves behind; putting ``site`` on ``sys.path``/``PYTHONPATH``
    makes ``importlib.metadata`` find the ``ptl`` entry point exactly as for a pip-installed plugin.
    """
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ptl]\n{entry or dist} = {module}\n")
    (info / "RECORD").write_text("")
    return site
