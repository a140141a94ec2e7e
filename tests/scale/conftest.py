"""Fixtures for the scale tests: one intra-op thread, and helpers to launch real torchrun jobs.

Helpers are handed out through the ``scale`` fixture because tests run with
``--import-mode=importlib``, where a test module cannot import a sibling module.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the suite shares two cores, and oversubscribed OpenMP threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
