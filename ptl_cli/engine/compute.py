"""Putting a model on its device the way the recipe's ``[compute]`` asks.

One place decides the fast paths (channels_last, torch.compile, DistributedDataParallel), so
every workflow gets them the same way and the CPU path stays the plain one.
"""

from __future__ import annotations

from typing import Any

from ptl_cli.engine.distributed import DistInfo


def prepare_model(model: Any, compute: Any, device: Any, dist: DistInfo | None = None) -> tuple[Any, Any]:
    """Return ``(model, train_model)``.

    ``model`` is the module on ``device`` (use it for state dicts, EMA, evaluation and anything
    that changes weights outside the optimizer, such as IteRand's re-draws); ``train_model`` is
    what the training step calls: the same module, or a DDP wrapper and/or a compiled version
    of it. Parameters and gradients are shared between the two.

    Under DDP, gradients are averaged over ranks in the backward pass; floating-point buffers
    (BatchNorm statistics) are broadcast from rank 0 before each forward; other buffers (masks'
    bookkeeping, counters) are left alone: every rank maintains them identically. Models with
    BatchNorm normalize with per-rank batch statistics (SyncBatchNorm needs CUDA), so they match
    a single-process run only in distribution; BatchNorm-free models match it to float precision.
    """
    import torch

    from ptl_cli.engine.sync import host_sync

    with host_sync("moving the model to its device, once"):
        model = model.to(device)
    if compute.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    train_model = model
    if dist is not None and dist.enabled:
        train_model = wrap_ddp(model, device)
    if compute.compile:
        train_model = torch.compile(train_model)
    return model, train_model


def wrap_ddp(model: Any, device: Any) -> Any:
    """``DistributedDataParallel(model)`` that broadcasts only floating-point buffers."""
    from torch.nn.parallel import DistributedDataParallel

    skip = [name for name, buf in model.named_buffers() if not buf.is_floating_point()]
    if skip:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, skip)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        broadcast_buffers=True,
        gradient_as_bucket_view=True,  # gradients live in the communication buckets: no extra copy
    )


def optimizer_options(device: Any) -> dict[str, Any]:
    """Keyword arguments for torch's SGD/Adam/AdamW on ``device``: the fused kernels on CUDA.

    One kernel updates every parameter, and under fp16 loss scaling the GradScaler hands its
    inf/NaN flag to that kernel instead of reading it on the host (``optimizer.step`` of an
    unfused optimizer makes the host wait for the GPU every step). On the CPU the plain
    implementation stays, so CPU runs are unchanged.
    """
    return {"fused": True} if getattr(device, "type", str(device)) == "cuda" else {}


def host_to_device(tensor: Any, device: Any) -> Any:
    """A CPU tensor on ``device`` without making the host wait: pinned, then copied asynchronously.

    A copy from ordinary (pageable) memory blocks the host until the GPU has taken it; from pinned
    memory it is queued like a kernel (torch keeps the pinned block alive until the copy is done).
    """
    if getattr(device, "type", str(device)) != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_device(images: Any, device: Any, channels_last: bool = False) -> Any:
    """Move a batch (non-blocking from pinned memory) in the layout the model expects."""
    import torch

    images = images.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images
