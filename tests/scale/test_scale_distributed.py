"""The engine's data-parallel plumbing under a real 2-process gloo group (torchrun on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ptl_cli.engine import distributed
from ptl_cli.errors import UserError

CHECKS = (
    "any_rank",
    "mean_over_ranks",
    "objects",
    "work_rounds",
    "ddp_gradients_equal_global_batch",
    "ddp_heads",
    "comatch_queues",
    "simmatch_bank",
    "verify_in_sync",
    "load_checkpoint",
    "collective_checks",
    "global_mean",
    "create_on_main",
    "gather_global_batch",
)


def test_plumbing_under_two_processes(scale):
    proc = scale.torchrun([str(Path(__file__).with_name("dist_worker.py"))])
    for check in CHECKS:
        for rank in (0, 1):
            assert f"ok {check} rank {rank}" in proc.output, proc.output[-4000:]


def test_single_process_is_the_plain_path(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.from_env()
    assert not info.enabled and info.is_main
    assert distributed.work_rounds([1, 2, 3], info) == [1, 2, 3]
    assert distributed.rank_share([1, 2, 3], info) == [1, 2, 3]
    assert distributed.any_rank(info, True) is True
    assert distributed.mean_over_ranks(info, {"x": 3}) == {"x": 3.0}
    assert distributed.local_batch_size(64, info) == 64
    batch = torch.arange(5)
    assert distributed.gather_global_batch(batch) is batch


def test_half_set_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="torchrun"):
        distributed.from_env()


def test_batch_that_does_not_split_names_the_key():
    info = distributed.DistInfo(rank=0, world_size=3)
    with pytest.raises(UserError, match=r"train.batch_size = 64 .* 3 processes"):
        distributed.local_batch_size(64, info, "train.batch_size")
    assert distributed.local_batch_size(63, info) == 21
