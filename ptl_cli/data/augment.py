"""Batched, per-sample random augmentations that run on the training device.

Each function draws its randomness from torch's RNG on the batch's device (or from
``generator``), so augmentation is reproducible and part of the checkpointed RNG state.
Input and output are float images ``(B, C, H, W)``.

Under data parallelism each rank holds the strided share ``global_batch[rank::world_size]``.
Inside :func:`batch_shard`, :func:`uniform` draws the numbers for the whole global batch and
keeps this rank's share: every rank consumes the RNG exactly as one process would, so N ranks
augment each image exactly as a single process with the global batch does, and no two ranks
reuse the same draws for different images.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_SHARD: contextvars.ContextVar[tuple[int, int]] = contextvars.ContextVar("ptl_batch_shard", default=(0, 1))


@contextlib.contextmanager
def batch_shard(rank: int, world_size: int) -> Iterator[None]:
    """Within the block, per-sample draws are this rank's share of the global batch's draws.

    Use it around the augmentation of a local batch that is ``global[rank::world_size]``;
    outside it (and with ``world_size == 1``) draws are the plain local ones.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    token = _SHARD.set((rank, world_size))
    try:
        yield
    finally:
        _SHARD.reset(token)


def current_shard() -> tuple[int, int]:
    """``(rank, world_size)`` of the enclosing :func:`batch_shard` (``(0, 1)`` outside one)."""
    return _SHARD.get()


def uniform(
    shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """U[0, 1) of ``shape`` on ``like``'s device; the **last** dimension indexes the batch.

    Drawn on the generator's device (the batch's device without one). Inside
    :func:`batch_shard` the last dimension is drawn ``world_size`` times larger and this
    rank's strided share is kept, so the RNG advances as for the global batch.
    """
    device = generator.device if generator is not None else like.device
    rank, world = _SHARD.get()
    if world == 1:
        return torch.rand(shape, generator=generator, device=device).to(like.device, non_blocking=True)
    full = torch.rand((*shape[:-1], shape[-1] * world), generator=generator, device=device)
    return full[..., rank::world].contiguous().to(like.device, non_blocking=True)


def _rand(shape: tuple[int, ...], images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return uniform(shape, images, generator)


def random_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Horizontal flip of each image with probability 1/2."""
    flip = _rand((images.shape[0],), images, generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def random_pad_crop(
    images: torch.Tensor, padding: int = 4, mode: str = "reflect", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad by ``padding`` and crop back to the original size at a random offset per image."""
    if padding <= 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode=mode)
    offsets = (_rand((2, b), images, generator) * (2 * padding + 1)).long().clamp_(max=2 * padding)
    rows = offsets[0].view(b, 1) + torch.arange(h, device=images.device).view(1, h)
    cols = offsets[1].view(b, 1) + torch.arange(w, device=images.device).view(1, w)
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    crops = padded.permute(0, 2, 3, 1)[batch, rows.view(b, h, 1), cols.view(b, 1, w)]
    return crops.permute(0, 3, 1, 2).contiguous()


def weak(images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard weak augmentation: random horizontal flip, then reflect-pad and crop."""
    return random_pad_crop(random_flip(images, generator), padding, generator=generator)


def random_resized_crop(
    images: torch.Tensor,
    size: int | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-image random area/aspect crop resized to ``size`` (bilinear), like torchvision's.

    Crops that would not fit are shrunk to fit instead of retried: the distribution of
    accepted crops differs from torchvision's rejection sampling only in that corner.
    """
    b, _, h, w = images.shape
    size = size or h
    area = scale[0] + (scale[1] - scale[0]) * _rand((b,), images, generator)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand((b,), images, generator))
    crop_w = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the width/height
    crop_h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - crop_w) * (2 * _rand((b,), images, generator) - 1)  # centre in [-1, 1] coordinates
    cy = (1 - crop_h) * (2 * _rand((b,), images, generator) - 1)
    theta = torch.zeros(b, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = crop_w
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = crop_h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize square batches (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@functools.lru_cache(maxsize=16)
def _luminance(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """ITU-R 601 luminance weights on ``device``, made once (a tensor built per call from a Python
    list is a blocking host-to-device copy on a GPU)."""
    from ptl_cli.engine.compute import host_to_device

    return host_to_device(torch.tensor([0.299, 0.587, 0.114], dtype=dtype).view(1, 3, 1, 1), device)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey by luminance; other mismatches are errors."""
    c = images.shape[1]
    if c == channels:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    if c == 3 and channels == 1:
        return (images * _luminance(images.device, images.dtype)).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels")
