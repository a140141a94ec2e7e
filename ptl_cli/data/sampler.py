"""A resumable, rank-aware sampler: epoch ``e`` is a permutation seeded by ``(seed, e)``.

Resuming mid-epoch only needs ``(epoch, batches_done)``; under data parallelism each rank
takes a disjoint strided share of the same permutation, so one global batch is split exactly.
With ``keyed=True`` it yields ``(epoch, index)`` keys, for datasets whose items depend on the
epoch (:class:`ptl_cli.data.photo.RandomCrops`).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices of one epoch: ``set_epoch(e, start)`` then iterate (this rank's share, from ``start``).

    Under data parallelism the last ``length % world_size`` items of each permutation are left
    out so that every rank gets the same number; ``drop_last`` is accepted for DataLoader-style
    call sites and changes nothing (whole batches are the caller's business). ``keyed`` yields
    ``(epoch, index)`` tuples instead of indices (the same indices in the same order).
    """

    def __init__(
        self,
        length: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        keyed: bool = False,
    ) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.keyed = keyed
        self.epoch = 0
        self.start = 0  # items of this rank's share already consumed in ``epoch``

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _order(self) -> torch.Tensor:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen)
        else:
            order = torch.arange(self.length)
        if self.world_size > 1:
            usable = (self.length // self.world_size) * self.world_size
            order = order[:usable][self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[int] | Iterator[tuple[int, int]]:
        indices = self._order()[self.start :].tolist()
        if self.keyed:
            return iter([(self.epoch, i) for i in indices])
        return iter(indices)

    def __len__(self) -> int:
        share = self.length // self.world_size if self.world_size > 1 else self.length
        return max(0, share - self.start)
