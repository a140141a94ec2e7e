"""The few mechanisms every algorithm here shares: view lookup and one batched forward pass.

Anything specific to one algorithm (its targets, masks, ramp-ups) stays in that algorithm's file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def view(views: dict[str, torch.Tensor], name: str, algorithm: str, batch: str) -> torch.Tensor:
    """``views[name]``, or an error that says which view the training loop failed to supply."""
    try:
        return views[name]
    except KeyError:
        given = ", ".join(sorted(views)) or "none"
        raise KeyError(
            f"{algorithm} needs the {name!r} view of the {batch} batch, but only got: {given}"
        ) from None


def forward_split(model: nn.Module, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Logits of each batch, from a single forward pass over their concatenation.

    One pass is what the reference FixMatch implementations do: it is faster, and BatchNorm
    normalizes the labeled and unlabeled samples with the statistics of the mixed batch.
    Batches of different image sizes cannot be concatenated and get one pass each.
    """
    if all(b.shape[1:] == batches[0].shape[1:] for b in batches):
        logits = model(torch.cat(batches) if len(batches) > 1 else batches[0])
        return tuple(logits.split([b.shape[0] for b in batches]))
    return tuple(model(b) for b in batches)


@contextlib.contextmanager
def frozen_batchnorm(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave BatchNorm's running statistics as they were.

    The batch is still normalized with its own statistics in training mode; only the running
    mean, variance and batch count come back unchanged. This is USB's ``bn_controller`` around
    the unlabeled passes of PseudoLabel and Mean Teacher, whose labeled batch alone then drives
    the statistics used at evaluation. Inside, the buffers hold copies the passes may update;
    afterwards they hold their own storage again, untouched: restoring by an in-place copy would
    bump the version of tensors autograd saved for the backward pass.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    buffers = [
        getattr(m, name)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
        for name in names
    ]
    kept = [b.data for b in buffers]
    for buffer, data in zip(buffers, kept, strict=True):
        buffer.data = data.clone()
    try:
        yield
    finally:
        for buffer, data in zip(buffers, kept, strict=True):
            buffer.data = data


def check_logits(logits: torch.Tensor, num_classes: int, algorithm: str) -> None:
    """Catch a head of the wrong width here rather than as a cryptic cross-entropy error."""
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(
            f"{algorithm} was built for {num_classes} classes but the model gives logits of shape "
            f"{tuple(logits.shape)}; expected (batch, {num_classes})"
        )


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside (Distributed)DataParallel and ``torch.compile`` wrappers.

    Matched by type, not by a ``module`` attribute, which an ordinary model may well have.
    """
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DataParallel, DistributedDataParallel)):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
            getattr(model, "_orig_mod", None), nn.Module
        ):
            model = model._orig_mod
        else:
            return model
