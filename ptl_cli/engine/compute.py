"""Putting a model on its device the way the recipe's ``[compute]`` asks.

One place decides the fast paths (channels_last, torch.compile, DistributedDataParallel), so
every workflow gets them the same way and the CPU path stays the plain one.
"""

from __future__ import annotations

from typing import Any

from ptl_cli.engine.distributed import DistInfo


def prepare_model(model: Any, compute: Any, device: Any, dist: DistInfo | None = None) -> tuple[Any, Any]:
    """Return ``(model, train_model)``.

    ``model`` is the module on ``device`` (use it for state dicts, EMA, evaluation);
    ``train_model`` is what the training step calls: the same module, or a DDP wrapper and/or
    a compiled version of it. Gradients and parameters are shared between the two.
    """
    import torch

    model = model.to(device)
    if compute.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_model = model
    if dist is not None and dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=True)
    if compute.compile:
        train_model = torch.compile(train_model)
    return model, train_model


def to_device(images: Any, device: Any, channels_last: bool = False) -> Any:
    """Move a batch (non-blocking from pinned memory) in the layout the model expects."""
    import torch

    images = images.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images
