"""torchvision datasets as ptl datasets, with clear errors when the files are missing.

Small fixed-size datasets are decoded once into memory (uint8); photo datasets are decoded
lazily, resized (short side) and centre-cropped to ``image_size``.
"""

from __future__ import annotations

from typing import Any

import torch

from ptl_cli.data.base import DatasetInfo, TensorImageDataset
from ptl_cli.data.locations import data_dir
from ptl_cli.errors import UserError
from ptl_datasets.folder import LazyImageDataset, photo_transform

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _open(cls_name: str, root: str | None, split: str, download: bool, split_kw: dict[str, Any]):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    where = data_dir(root)
    try:
        return cls(str(where), download=download, **split_kw), where
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        hint = "pass --download (needs internet) or put the files there" if not download else str(exc)
        raise UserError(f"{cls_name} ({split}) not found — looked in {where}; {hint}") from None


def _split_kw(cls_name: str, split: str) -> dict[str, Any]:
    if cls_name in ("MNIST", "CIFAR10", "CIFAR100"):
        if split not in ("train", "test"):
            raise UserError(f"{cls_name} has splits 'train' and 'test', not {split!r}")
        return {"train": split == "train"}
    if cls_name == "OxfordIIITPet":
        return {"split": "trainval" if split == "train" else split}
    if cls_name == "Caltech101":
        return {}
    return {"split": split}


def _in_memory(cls_name: str, root, split, download, mean, std) -> TensorImageDataset:
    ds, _ = _open(cls_name, root, split, download, _split_kw(cls_name, split))
    data = ds.data
    images = torch.as_tensor(data)
    if images.ndim == 3:  # N, H, W
        images = images.unsqueeze(1)
    elif images.shape[-1] == 3:  # N, H, W, C
        images = images.permute(0, 3, 1, 2)
    targets = torch.as_tensor(getattr(ds, "targets", None) if hasattr(ds, "targets") else ds.labels)
    names = tuple(getattr(ds, "classes", [str(i) for i in range(int(targets.max()) + 1)]))
    info = DatasetInfo(cls_name.lower(), len(names), images.shape[1], images.shape[-1], names, mean, std)
    return TensorImageDataset(images.contiguous(), targets.long(), info)


def MNIST(root=None, split="train", download=False):
    return _in_memory("MNIST", root, split, download, (0.1307,), (0.3081,))


def CIFAR10(root=None, split="train", download=False):
    return _in_memory("CIFAR10", root, split, download, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def CIFAR100(root=None, split="train", download=False):
    return _in_memory("CIFAR100", root, split, download, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))


def SVHN(root=None, split="train", download=False):
    ds = _in_memory("SVHN", root, split, download, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
    return ds


def STL10(root=None, split="train", download=False):
    return _in_memory("STL10", root, split, download, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713))


def _targets(ds: Any) -> list[int]:
    """Labels without decoding images: torchvision keeps them under different names."""
    for attr in ("_labels", "targets", "y", "labels"):
        if hasattr(ds, attr):
            return [int(t) for t in getattr(ds, attr)]
    if hasattr(ds, "_samples"):
        return [int(s[1]) for s in ds._samples]
    return [int(ds[i][1]) for i in range(len(ds))]


def _photos(cls_name: str, root, split, download, image_size: int) -> LazyImageDataset:
    ds, _ = _open(cls_name, root, split, download, _split_kw(cls_name, split))
    targets = _targets(ds)
    names = tuple(
        getattr(ds, "classes", None)
        or getattr(ds, "categories", None)
        or [str(i) for i in range(max(targets) + 1)]
    )
    info = DatasetInfo(cls_name.lower(), len(names), 3, image_size, names, IMAGENET_MEAN, IMAGENET_STD)

    def load(index: int):
        image = ds[index][0]
        return photo_transform(image, image_size)

    return LazyImageDataset(load, torch.as_tensor(targets), info)


def _photo_factory(cls_name: str):
    def factory(root=None, split="train", download=False, image_size: int = 224):
        return _photos(cls_name, root, split, download, image_size)

    factory.__name__ = cls_name
    return factory


StanfordCars = _photo_factory("StanfordCars")
FGVCAircraft = _photo_factory("FGVCAircraft")
OxfordIIITPet = _photo_factory("OxfordIIITPet")
Flowers102 = _photo_factory("Flowers102")
DTD = _photo_factory("DTD")
Food101 = _photo_factory("Food101")
Caltech101 = _photo_factory("Caltech101")
