"""The pruning workflow's data: a seeded train/validation split, batched device augmentation, eval.

As in both papers, a share of the train split (10% by default) is held out for validation and
the test split is only evaluated at the end. Images stay uint8 until they reach the device,
where augmentation draws from torch's RNG (part of every checkpoint) so resumes are exact.
Photos (ImageNet, image folders, ...) are the exception for the random-resized crop: it is taken
from the full photo in the loader workers (:mod:`ptl_cli.data.photo`), and only the flip is left
to the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from ptl_cli import plugins
from ptl_cli.data import augment
from ptl_cli.data.base import DatasetInfo, normalize, to_float
from ptl_cli.data.photo import PhotoDataset
from ptl_cli.data.splits import holdout_split


@dataclass
class PruneData:
    train: Dataset
    val: Dataset | None
    test: Dataset
    info: DatasetInfo


def _subset(dataset: Any, indices: torch.Tensor) -> Dataset:
    return dataset.subset(indices) if hasattr(dataset, "subset") else Subset(dataset, indices.tolist())


def _limit(n: int, limit: int, seed: int) -> torch.Tensor:
    """``limit`` seeded indices of ``n`` (sorted), or all of them."""
    if not limit or limit >= n:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n, generator=gen)[:limit]).values


def load(section: Any) -> PruneData:
    """Build the dataset plugin's splits and hold out the validation share (seeded)."""
    spec = plugins.get("datasets", section.dataset)
    where = f"dataset {section.dataset}"
    full = spec.build(section.data_dir, "train", section.download, params=section.params, where=where)
    test = spec.build(section.data_dir, "test", section.download, params=section.params, where=where)
    train_idx, val_idx = holdout_split(len(full), section.val_fraction, section.split_seed)
    train_idx = train_idx[_limit(train_idx.numel(), section.train_limit, section.split_seed + 1)]
    val = _subset(full, val_idx) if val_idx.numel() else None
    test = _subset(test, _limit(len(test), section.test_limit, section.split_seed + 2))
    return PruneData(_subset(full, train_idx), val, test, full.info)


def crop_in_loader(train: Dataset, section: Any, seed: int) -> Dataset:
    """The training set, as random-resized crops of the full photos when it holds photos.

    Photos have no common size to crop on the device from, so with ``crop = "random-resized"``
    each is cropped (``pad``, then torchvision's RandomResizedCrop at ``crop_scale``) in the loader
    workers, seeded by ``(seed, epoch, index)``; other datasets are returned as they are.
    """
    if section.crop != "random-resized" or not isinstance(train, PhotoDataset):
        return train
    return train.random_crops(seed, scale=tuple(section.crop_scale), pad=section.pad)


def train_views(images: torch.Tensor, section: Any, info: DatasetInfo, cropped: bool = False) -> torch.Tensor:
    """uint8 batch on the device -> augmented, normalized float batch (the papers' pipeline).

    ``cropped``: the loader already took the random-resized crops (:func:`crop_in_loader`).
    """
    x = to_float(images)
    size = x.shape[-1]
    if section.crop == "random-resized" and not cropped:
        if section.pad:
            x = F.pad(x, (section.pad,) * 4)
        x = augment.random_resized_crop(x, size=size, scale=tuple(section.crop_scale))
    elif section.crop == "random":
        x = augment.random_pad_crop(x, section.pad)
    if section.flip:
        x = augment.random_flip(x)
    return normalize(x, info.mean, info.std)


def eval_views(images: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    return normalize(to_float(images), info.mean, info.std)


def loader(dataset: Dataset, batch_size: int, sampler: Any, workers: int, drop_last: bool = False) -> Any:
    """A DataLoader in ptl's shape: ``collate`` (uint8 batches stay uint8) and a generator of its
    own, since a loader seeds its workers from the global RNG otherwise (exact resume)."""
    from torch.utils.data import DataLoader

    from ptl_cli.data.base import collate

    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        drop_last=drop_last,
        generator=torch.Generator(),
    )


def eval_batches(
    dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1, workers: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed-order batches; each data-parallel rank takes a strided share. Photos are decoded
    by ``workers`` loader processes (in-memory datasets are sliced here, which is faster)."""
    from ptl_cli.data.base import collate

    indices = list(range(rank, len(dataset), world_size))
    if workers and isinstance(dataset, PhotoDataset):
        yield from loader(dataset, batch_size, indices, workers)
        return
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        if hasattr(dataset, "__getitems__"):
            yield collate(dataset.__getitems__(chunk))
        else:
            yield collate([dataset[i] for i in chunk])
