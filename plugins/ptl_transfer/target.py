"""The target task: a dataset plugin (or an image folder), optional class subset, N labels per class.

The labeled training set is small by construction, so it is held in memory as one uint8 tensor;
the test split is streamed in batches. Which images were labeled depends only on the dataset,
the classes, ``labels_per_class`` and ``split_seed`` -- not on the run seed -- so runs with
different seeds train on the same labeled images (and share one PCS pool).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ptl_cli import plugins
from ptl_cli.data.base import DatasetInfo, ImageDataset, TensorImageDataset, collate
from ptl_cli.data.locations import data_dir
from ptl_cli.data.splits import per_class_split
from ptl_cli.errors import UserError


@dataclass
class TargetData:
    images: torch.Tensor  # uint8 (N, C, H, W): the labeled training images
    labels: torch.Tensor  # int64 (N,)
    indices: torch.Tensor  # their positions in the (class-selected) training split
    test: ImageDataset
    info: DatasetInfo

    @property
    def num_classes(self) -> int:
        return self.info.num_classes


class ClassSubset(ImageDataset):
    """Some classes of any dataset, relabelled ``0..len(classes)-1`` in the order given."""

    def __init__(self, base: ImageDataset, classes: Sequence[int]) -> None:
        classes = list(classes)
        lookup = torch.full((base.info.num_classes,), -1, dtype=torch.long)
        lookup[torch.as_tensor(classes)] = torch.arange(len(classes))
        self.keep = torch.nonzero(torch.isin(base.targets, torch.as_tensor(classes))).flatten()
        self.base = base
        self.targets = lookup[base.targets[self.keep]]
        i = base.info
        names = tuple(i.class_names[c] for c in classes)
        self.info = DatasetInfo(i.name, len(classes), i.channels, i.image_size, names, i.mean, i.std)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.base[int(self.keep[index])]
        return image, int(self.targets[index])


def select_classes(dataset: ImageDataset, classes: Sequence[int]) -> ImageDataset:
    """Keep ``classes`` (relabelled in that order); in-memory datasets stay in memory."""
    subset = ClassSubset(dataset, classes)
    if isinstance(dataset, TensorImageDataset):
        return TensorImageDataset(dataset.images[subset.keep], subset.targets, subset.info)
    return subset


def build_dataset(recipe: Any, split: str) -> ImageDataset:
    t = recipe.target
    spec = plugins.get("datasets", t.dataset)
    dataset = spec.build(
        str(data_dir(t.data_dir)), split, t.download, params=t.params, where=f"[target] dataset {t.dataset}"
    )
    if t.classes:
        bad = [c for c in t.classes if not 0 <= c < dataset.info.num_classes]
        if bad:
            raise UserError(
                f"[target] classes: {t.dataset} has classes 0..{dataset.info.num_classes - 1}, not {bad[0]}"
            )
        dataset = select_classes(dataset, t.classes)
    return dataset


def stack(dataset: ImageDataset, indices: torch.Tensor, workers: int = 0) -> torch.Tensor:
    """The uint8 images at ``indices`` as one tensor (decoded with ``workers`` processes)."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.images[indices]
    return torch.cat([images for images, _ in batches(dataset, 64, workers, indices)])


def batches(
    dataset: ImageDataset, batch_size: int, workers: int = 0, indices: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images, labels)`` batches in order; tensor datasets are sliced without a loader."""
    if isinstance(dataset, TensorImageDataset):
        index = torch.arange(len(dataset)) if indices is None else indices
        for chunk in index.split(batch_size):
            yield dataset.images[chunk], dataset.targets[chunk]
        return
    from torch.utils.data import DataLoader, Subset

    source = dataset if indices is None else Subset(dataset, indices.tolist())
    loader = DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    yield from loader


class RealUnlabeled:
    """The target's training images of the recipe's classes that are not labeled, in place of the
    PCS pool (``ssl.unlabeled = "real"``): the same ``len``/``gather`` a pool has, uint8 images."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"images": self.images[index]}


def real_unlabeled(recipe: Any, target: TargetData) -> RealUnlabeled:
    """Every training image of the target's classes but the labeled ones (plain SSL's unlabeled set)."""
    train = build_dataset(recipe, recipe.target.train_split)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[target.indices] = False
    return RealUnlabeled(stack(train, keep.nonzero().flatten(), recipe.compute.workers))


def load(recipe: Any) -> TargetData:
    """The labeled training images and the test split the recipe describes."""
    train = build_dataset(recipe, recipe.target.train_split)
    test = build_dataset(recipe, recipe.target.test_split)
    per_class = recipe.target.labels_per_class
    if per_class:
        labeled, _ = per_class_split(train.targets, per_class, recipe.target.split_seed)
    else:  # the whole training split is labeled (the paper's full-data setting)
        labeled = torch.arange(len(train))
    images = stack(train, labeled, recipe.compute.workers)
    return TargetData(images, train.targets[labeled].clone(), labeled, test, train.info)
