"""Distributed sampling: N ranks' local batches are exactly one process's global batches.

``ResumableSampler(rank=r, world_size=N)`` yields ``order[r::N]`` of the epoch's permutation, so
local batch ``k`` of rank ``r`` is ``global_batch_k[r::N]`` -- the convention augmentation
sharding and step-indexed batches (``rank_share``) use too. Resuming at ``batch`` local batches
lands on the same global position whatever the number of ranks.
"""

from __future__ import annotations

import pytest
import torch

from ptl_cli.data.sampler import ResumableSampler
from ptl_cli.engine.distributed import DistInfo, rank_share


def local_batches(
    length: int, world: int, rank: int, batch: int, epoch: int, start: int = 0
) -> list[list[int]]:
    sampler = ResumableSampler(length, seed=9, rank=rank, world_size=world)
    sampler.set_epoch(epoch, start=start * (batch // world))
    items = list(sampler)
    per = batch // world
    return [items[i : i + per] for i in range(0, len(items), per)]


@pytest.mark.parametrize("world", [2, 4])
def test_rank_batches_are_strided_shares_of_the_global_batch(world):
    length, batch = 96, 16
    single = local_batches(length, 1, 0, batch, epoch=3)
    ranks = [local_batches(length, world, r, batch, epoch=3) for r in range(world)]
    for k, global_batch in enumerate(single):
        for r in range(world):
            assert ranks[r][k] == global_batch[r::world]
            assert ranks[r][k] == rank_share(global_batch, DistInfo(rank=r, world_size=world))


def test_resume_position_does_not_depend_on_the_number_of_ranks():
    length, batch, done = 96, 16, 2  # two global batches consumed before the interruption
    single = local_batches(length, 1, 0, batch, epoch=1, start=done)
    for world in (2, 4):
        for r in range(world):
            resumed = local_batches(length, world, r, batch, epoch=1, start=done)
            assert resumed == [g[r::world] for g in single]


def test_uneven_lengths_drop_the_remainder_on_every_rank():
    """97 items over 2 ranks: each rank gets 48 (the 97th is left out), never a rank with more."""
    shares = [list(ResumableSampler(97, seed=0, rank=r, world_size=2)) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 48
    assert not set(shares[0]) & set(shares[1])
    assert torch.tensor(shares[0] + shares[1]).unique().numel() == 96
