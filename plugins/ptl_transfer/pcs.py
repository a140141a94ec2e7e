"""Pseudo conditional sampling (PCS) and pseudo pre-training samples: what goes into a pool shard.

PCS maps a target image to source-domain pseudo samples: ``p = softmax(C_s(x_t) / T)``
(optionally only the ``top_k`` largest entries, renormalized), then ``x_{s<-t} = G_s(z, p)``.
The PP shard is the same call with one-hot conditioning on uniformly drawn source classes.
Both derive every random number from ``(seed, shard index)``, which is what makes a pool
independent of how its generation was interrupted.
"""

from __future__ import annotations

from typing import Any

import torch

from ptl_cli.data.base import to_float
from ptl_cli.engine.seeding import generator_for
from ptl_transfer.pool import to_uint8

# Salts that keep the random streams of different uses apart.
_PP_LABELS, _PP_NOISE, _PCS_NOISE = 101, 102, 103


def soft_labels(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """``softmax(logits / T)``; with ``top_k`` > 0 all but the k largest are zeroed, rows renormalized."""
    probs = torch.softmax(logits.float() / temperature, dim=1)
    if 0 < top_k < probs.shape[1]:
        values, index = probs.topk(top_k, dim=1)
        probs = torch.zeros_like(probs).scatter_(1, index, values)
        probs = probs / probs.sum(dim=1, keepdim=True)
    return probs


@torch.no_grad()
def classify(classifier: Any, images: torch.Tensor, device: Any, batch_size: int = 256) -> torch.Tensor:
    """Source-classifier logits for uint8 or [0, 1] images, computed in batches on ``device``."""
    from ptl_cli.engine.compute import host_to_device
    from ptl_cli.engine.sync import host_sync

    out = []
    for chunk in images.split(batch_size):
        x = to_float(chunk) if chunk.dtype == torch.uint8 else chunk.float()
        out.append(classifier(host_to_device(x, device)).float())
    with host_sync("source-classifier outputs for a pool shard"):
        return torch.cat(out).cpu()


@torch.no_grad()
def generate(
    generator: Any,
    conditions: torch.Tensor,
    noise: torch.Generator,
    size: int,
    channels: int,
    batch_size: int,
    device: Any,
    on_host: bool = True,
) -> torch.Tensor:
    """``G_s`` on class indices or probability rows, in batches, as target-format uint8 images
    (on the host for a pool, on the device for on-the-fly batches: see :func:`to_uint8`)."""
    from ptl_cli.engine.compute import host_to_device

    images = []
    for chunk in conditions.split(batch_size):
        sample = generator.sample(host_to_device(chunk, device), generator=noise)
        images.append(to_uint8(sample, size, channels, on_host))
    return torch.cat(images)


def pp_shard(
    generator: Any,
    index: int,
    shard_size: int,
    seed: int,
    size: int,
    channels: int,
    batch_size: int,
    device: Any,
    on_host: bool = True,
) -> dict[str, torch.Tensor]:
    """Shard ``index`` of a PP pool: ``shard_size`` samples of uniformly drawn source classes."""
    labels = torch.randint(
        generator.num_classes, (shard_size,), generator=generator_for(seed, _PP_LABELS, index)
    )
    noise = generator_for(seed, _PP_NOISE, index, device=device)
    images = generate(generator, labels, noise, size, channels, batch_size, device, on_host)
    return {"images": images, "labels": labels}


def pp_batch(
    generator: Any, step: int, batch: int, seed: int, size: int, channels: int, device: Any
) -> dict[str, torch.Tensor]:
    """On-the-fly PP: the batch of ``step`` is a one-batch shard, so resume draws it again exactly.
    Its images stay on the device they were generated on (no round trip through the host)."""
    return pp_shard(generator, step, batch, seed, size, channels, batch, device, on_host=False)


def pcs_shard(
    generator: Any,
    classifier: Any,
    target_images: torch.Tensor,
    first: int,
    index: int,
    per_image: int,
    temperature: float,
    top_k: int,
    seed: int,
    batch_size: int,
    device: Any,
) -> dict[str, torch.Tensor]:
    """Shard ``index`` of a PCS pool: ``per_image`` pseudo samples of each image in ``target_images``.

    ``first`` is the position of ``target_images[0]`` in the labeled set; the shard records, per
    sample, that source ``index`` and the soft label ``soft`` that conditioned it.
    """
    _, channels, size, _ = target_images.shape
    probs = soft_labels(classify(classifier, target_images, device, batch_size), temperature, top_k)
    soft = probs.repeat_interleave(per_image, dim=0)
    noise = generator_for(seed, _PCS_NOISE, index, device=device)
    images = generate(generator, soft, noise, size, channels, batch_size, device)
    source = torch.arange(first, first + target_images.shape[0]).repeat_interleave(per_image)
    return {"images": images, "labels": soft.argmax(dim=1), "soft": soft, "index": source}
