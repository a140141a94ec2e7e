"""torchvision datasets as ptl datasets, with clear errors when the files are missing.

Small fixed-size datasets are decoded once into memory (uint8); photo datasets are decoded
lazily as :class:`ptl_cli.data.photo.PhotoDataset` items (evaluated at ``Resize(round(size·256/224))
+ CenterCrop(size)``, cropped from the full image for training). Each dataset is described
once in :data:`SOURCES`: the torchvision class, the folder it reads under the data directory
(what a "not found" message names), and how ptl's splits map onto torchvision's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ptl_cli.data.base import DatasetInfo, TensorImageDataset
from ptl_cli.data.locations import data_dir
from ptl_cli.data.photo import PhotoDataset
from ptl_cli.data.splits import holdout_split
from ptl_cli.errors import UserError
from ptl_datasets.folder import IMAGENET_MEAN, IMAGENET_STD

_TRAIN_TEST = {"train": {"train": True}, "test": {"train": False}}
#: Caltech-101 has no official test split: ``test`` is this seeded share of the images.
CALTECH_TEST_FRACTION, CALTECH_SPLIT_SEED = 0.2, 0


@dataclass(frozen=True)
class Source:
    """How one ptl dataset is read through torchvision."""

    cls: str  # torchvision.datasets class name
    folder: str  # what torchvision reads under the data directory ("" = the directory itself)
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)  # ptl split -> constructor kwargs
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    get: str = "pass --download (needs internet) to fetch it there, or --data-dir DIR where it is"


SOURCES: dict[str, Source] = {
    "mnist": Source("MNIST", "MNIST/raw", _TRAIN_TEST, (0.1307,), (0.3081,)),
    "cifar10": Source(
        "CIFAR10", "cifar-10-batches-py", _TRAIN_TEST, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": Source(
        "CIFAR100", "cifar-100-python", _TRAIN_TEST, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "svhn": Source(
        "SVHN",
        "",
        {s: {"split": s} for s in ("train", "test", "extra")},
        (0.4377, 0.4438, 0.4728),
        (0.1980, 0.2010, 0.1970),
    ),
    "stl10": Source(
        "STL10",
        "stl10_binary",
        {s: {"split": s} for s in ("train", "test", "unlabeled", "train+unlabeled")},
        (0.4467, 0.4398, 0.4066),
        (0.2603, 0.2566, 0.2713),
    ),
    "stanford-cars": Source(  # placed by hand (ptl_datasets.facts.BY_HAND): no download
        "StanfordCars", "stanford_cars", {s: {"split": s} for s in ("train", "test")}
    ),
    # ``train`` is the official train+val split where torchvision has one (the usual protocol)
    "fgvc-aircraft": Source(
        "FGVCAircraft",
        "fgvc-aircraft-2013b",
        {"train": {"split": "trainval"}, "val": {"split": "val"}, "test": {"split": "test"}},
    ),
    "oxford-pets": Source(
        "OxfordIIITPet", "oxford-iiit-pet", {"train": {"split": "trainval"}, "test": {"split": "test"}}
    ),
    "flowers102": Source("Flowers102", "flowers-102", {s: {"split": s} for s in ("train", "val", "test")}),
    "dtd": Source("DTD", "dtd", {s: {"split": s} for s in ("train", "val", "test")}),
    "food101": Source("Food101", "food-101", {s: {"split": s} for s in ("train", "test")}),
    "caltech101": Source("Caltech101", "caltech101", {"train": {}, "test": {}}),
}


def _open(name: str, root: str | None, split: str, download: bool):
    """The torchvision dataset object, or a one-line :class:`UserError` saying what to do."""
    import torchvision.datasets as tvd

    from ptl_datasets import facts

    source = SOURCES[name]
    if split not in source.splits:
        raise UserError(f"{name} has splits {', '.join(map(repr, source.splits))}, not {split!r}")
    where = data_dir(root)
    looked = where / source.folder if source.folder else where
    if name in facts.BY_HAND:  # torchvision's download=True raises even when the files are there
        if facts.missing(name, where):
            if download:
                raise UserError(facts.by_hand_message(name, where))
            hint = facts.not_found_hint(name, where)
            raise UserError(f"{name} ({split}) not found — looked in {looked}; {hint}")
        download = False
    try:
        return getattr(tvd, source.cls)(str(where), download=download, **source.splits[split])
    except (RuntimeError, OSError, ValueError) as exc:  # torchvision's "not found" is a RuntimeError
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if download:
            raise UserError(f"downloading {name} into {where} failed: {text}") from None
        if "not found" in text.lower() or "corrupt" in text.lower() or isinstance(exc, FileNotFoundError):
            raise UserError(f"{name} ({split}) not found — looked in {looked}; {source.get}") from None
        raise UserError(f"{name} ({split}) could not be read from {looked}: {text}") from None


def _in_memory(name: str, root: str | None, split: str, download: bool) -> TensorImageDataset:
    ds = _open(name, root, split, download)
    images = torch.as_tensor(ds.data)
    if images.ndim == 3:  # N, H, W (MNIST)
        images = images.unsqueeze(1)
    elif images.shape[-1] == 3:  # N, H, W, C (CIFAR); SVHN and STL-10 are already N, C, H, W
        images = images.permute(0, 3, 1, 2)
    targets = torch.as_tensor(ds.targets if hasattr(ds, "targets") else ds.labels).long()
    names = tuple(getattr(ds, "classes", None) or [str(i) for i in range(int(targets.max()) + 1)])
    source = SOURCES[name]
    info = DatasetInfo(name, len(names), images.shape[1], images.shape[-1], names, source.mean, source.std)
    return TensorImageDataset(images.contiguous(), targets, info)


def _targets(ds: Any) -> list[int]:
    """Labels without decoding images: torchvision keeps them under different names."""
    for attr in ("_labels", "targets", "y", "labels"):
        if hasattr(ds, attr):
            return [int(t) for t in getattr(ds, attr)]
    if hasattr(ds, "_samples"):
        return [int(s[1]) for s in ds._samples]
    return [int(ds[i][1]) for i in range(len(ds))]


class _OpenItem:
    """``open(i)``: the PIL image of item ``i`` of a torchvision dataset (picklable, for workers)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, index: int):
        return self.dataset[index][0]


def _photos(name: str, root: str | None, split: str, download: bool, image_size: int) -> PhotoDataset:
    ds = _open(name, root, split, download)
    targets = _targets(ds)
    names = tuple(
        getattr(ds, "classes", None)
        or getattr(ds, "categories", None)
        or [str(i) for i in range(max(targets) + 1)]
    )
    source = SOURCES[name]
    info = DatasetInfo(name, len(names), 3, image_size, names, source.mean, source.std)
    dataset = PhotoDataset(_OpenItem(ds), torch.as_tensor(targets), info)
    if name == "caltech101":
        train, test = holdout_split(len(dataset), CALTECH_TEST_FRACTION, CALTECH_SPLIT_SEED)
        dataset = dataset.subset(train if split == "train" else test)
    return dataset


def _in_memory_factory(name: str):
    def factory(root: str | Path | None = None, split: str = "train", download: bool = False):
        return _in_memory(name, None if root is None else str(root), split, download)

    factory.__name__ = SOURCES[name].cls
    factory.__doc__ = f"{name} through torchvision.datasets.{SOURCES[name].cls}, held in memory as uint8."
    return factory


def _photo_factory(name: str):
    def factory(
        root: str | Path | None = None, split: str = "train", download: bool = False, image_size: int = 224
    ):
        return _photos(name, None if root is None else str(root), split, download, image_size)

    factory.__name__ = SOURCES[name].cls
    factory.__doc__ = f"{name} through torchvision.datasets.{SOURCES[name].cls}, decoded on access."
    return factory


MNIST = _in_memory_factory("mnist")
CIFAR10 = _in_memory_factory("cifar10")
CIFAR100 = _in_memory_factory("cifar100")
SVHN = _in_memory_factory("svhn")
STL10 = _in_memory_factory("stl10")
StanfordCars = _photo_factory("stanford-cars")
FGVCAircraft = _photo_factory("fgvc-aircraft")
OxfordIIITPet = _photo_factory("oxford-pets")
Flowers102 = _photo_factory("flowers102")
DTD = _photo_factory("dtd")
Food101 = _photo_factory("food101")
Caltech101 = _photo_factory("caltech101")
