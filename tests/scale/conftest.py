"""Fixtures for the scale tests: one intra-op thread, and helpers to launch real torchrun jobs.

Helpers are handed out through the ``scale`` fixture because tests run with
``--import-mode=importlib``, where a test module cannot import a sibling module.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every scale test runs with one intra-op thread (the shared ``one_thread`` fixture)."""


def torchrun(args: list[str], nproc: int = 2, timeout: float = 240, check: bool = True):
    """``python -m torch.distributed.run --standalone --nproc-per-node N ARGS`` (gloo on CPU).

    ``--standalone`` rendezvouses on a free local port, so tests can run side by side.
    Returns the completed process (stdout and stderr merged); ``check`` asserts exit status 0.
    """
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    if check:
        assert proc.returncode == 0, output[-6000:]
    proc.output = output  # type: ignore[attr-defined]
    return proc


class Helpers:
    torchrun = staticmethod(torchrun)


@pytest.fixture(scope="session")
def scale() -> type[Helpers]:
    return Helpers
