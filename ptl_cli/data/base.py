"""The dataset contract: uint8 images with labels and the metadata a workflow needs.

Dataset plugins return an :class:`ImageDataset`. Items are ``(uint8 tensor C×H×W, int label)``;
conversion to float, normalization and augmentation happen batched on the training device,
which keeps loaders cheap and makes augmentation randomness part of the checkpointed RNG.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    image_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


class ImageDataset(Dataset):
    """Base class: subclasses set ``info`` and ``targets`` and implement ``__getitem__``."""

    info: DatasetInfo
    targets: torch.Tensor  # int64 labels, one per item (per-class splits need them up front)

    def __len__(self) -> int:
        return int(self.targets.numel())

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def image_size(self) -> int:
        return self.info.image_size

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names


class TensorImageDataset(ImageDataset):
    """A dataset held in memory as one uint8 tensor ``(N, C, H, W)``; batches are slices."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, info: DatasetInfo) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if images.shape[0] != targets.shape[0]:
            raise ValueError("images and targets differ in length")
        self.images = images
        self.targets = targets.long()
        self.info = info

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched fetch: the DataLoader hands this straight to ``collate`` (no per-item work)."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.images[index], self.targets[index]

    def subset(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[indices], self.targets[indices], self.info)

    def select_classes(self, classes: Sequence[int], relabel: bool = True) -> TensorImageDataset:
        """Keep only ``classes``; with ``relabel`` they become 0..len(classes)-1 in that order."""
        keep = torch.isin(self.targets, torch.as_tensor(list(classes)))
        images, targets = self.images[keep], self.targets[keep]
        names = self.info.class_names
        if relabel:
            top = int(self.targets.max()) if self.targets.numel() else 0
            mapping = torch.full((max(max(classes), top) + 1,), -1, dtype=torch.long)
            mapping[torch.as_tensor(list(classes))] = torch.arange(len(classes))
            targets = mapping[targets]
            names = tuple(self.info.class_names[c] for c in classes)
        info = DatasetInfo(
            name=self.info.name,
            num_classes=len(classes) if relabel else self.info.num_classes,
            channels=self.info.channels,
            image_size=self.info.image_size,
            class_names=names,
            mean=self.info.mean,
            std=self.info.std,
        )
        return TensorImageDataset(images, targets, info)


def collate(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate either a pre-batched ``(images, targets)`` pair or a list of items."""
    if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], torch.Tensor):
        return batch
    images = torch.stack([item[0] for item in batch])
    targets = torch.as_tensor([item[1] for item in batch], dtype=torch.long)
    return images, targets


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m, s = _stats(tuple(mean), tuple(std), images.device, images.dtype)
    return (images - m) / s


@functools.lru_cache(maxsize=64)
def _stats(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device, dtype: torch.dtype):
    """Mean/std as device tensors, made once: a host-to-device copy per batch would sync on GPU."""
    from ptl_cli.engine.compute import host_to_device

    m = host_to_device(torch.tensor(mean, dtype=dtype).view(1, -1, 1, 1), device)
    s = host_to_device(torch.tensor(std, dtype=dtype).view(1, -1, 1, 1), device)
    return m, s
