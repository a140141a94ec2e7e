"""Step-indexed batch indices: the batch of step ``s`` is a pure function of ``(seed, s)``.

The stream is the concatenation of seeded permutations of ``range(n)`` (one per epoch) cut into
batches of ``batch`` items; a batch may straddle two epochs, so a labeled set smaller than the
batch still works. Resuming at step ``s`` needs nothing but ``s``: no sampler state to save.
"""

from __future__ import annotations

import torch

from ptl_cli.engine.seeding import generator_for


class StepStream:
    def __init__(self, n: int, batch: int, seed: int, salt: int) -> None:
        if n <= 0:
            raise ValueError("cannot draw batches from an empty set")
        self.n, self.batch, self.seed, self.salt = n, batch, seed, salt
        self._cache: dict[int, torch.Tensor] = {}  # the last two epochs' permutations

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) >= 2:
                del self._cache[min(self._cache)]
            self._cache[epoch] = torch.randperm(self.n, generator=generator_for(self.seed, self.salt, epoch))
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of the batch at ``step``."""
        start = step * self.batch
        positions = torch.arange(start, start + self.batch)
        epochs = positions // self.n
        out = torch.empty(self.batch, dtype=torch.long)
        for epoch in torch.unique(epochs).tolist():
            sel = epochs == epoch
            out[sel] = self._perm(epoch)[positions[sel] % self.n]
        return out
