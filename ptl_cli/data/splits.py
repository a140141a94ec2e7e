"""Seeded labeled/unlabeled/validation splits, recorded in the run so they can be reproduced."""

from __future__ import annotations

import torch

from ptl_cli.errors import UserError


def per_class_split(targets: torch.Tensor, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of ``per_class`` items of every class (the labeled set) and of all the rest.

    The choice depends only on ``targets`` and ``seed``: the same call gives the same split.
    """
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(targets).tolist():
        idx = torch.nonzero(targets == cls).flatten()
        if idx.numel() < per_class:
            raise UserError(f"class {cls} has only {idx.numel()} examples; --labels-per-class must be ≤ that")
        chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
    labeled = torch.sort(torch.cat(chosen)).values
    mask = torch.ones(targets.numel(), dtype=torch.bool)
    mask[labeled] = False
    return labeled, torch.nonzero(mask).flatten()


def holdout_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices with ``fraction`` of ``n`` held out, seeded."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)
    n_val = int(round(n * fraction))
    return torch.sort(perm[n_val:]).values, torch.sort(perm[:n_val]).values
