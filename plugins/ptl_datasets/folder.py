"""Image-folder datasets (ImageNet, CUB-200, your own images), decoded lazily.

A folder holds ``<class>/<image>`` files, either once per split (``DIR/train/<class>/``,
``DIR/test/<class>/``) or once for everything (``DIR/<class>/``). Labels follow the sorted class
folders of the *train* split, so every split labels a class the same way even when a split lacks
some class; a single folder is split into train and a seeded 20% test hold-out, so test images
are never trained on. Items are :class:`ptl_cli.data.photo.PhotoDataset` photos: evaluated at
``Resize(round(size·256/224)) + CenterCrop(size)``, cropped from the full image for training.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ptl_cli.data.base import DatasetInfo
from ptl_cli.data.locations import data_dir
from ptl_cli.data.photo import PhotoDataset, PhotoFiles
from ptl_cli.data.splits import holdout_split
from ptl_cli.errors import UserError
from ptl_datasets.facts import EXTENSIONS

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLIT_DIRS = ("train", "val", "test")
#: A single class-per-folder directory is split into train and this seeded test share.
HOLDOUT_FRACTION, HOLDOUT_SEED = 0.2, 0


def class_names(directory: Path) -> list[str]:
    """Sorted sub-folder names (hidden ones such as ``.ipynb_checkpoints`` left out)."""
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan(directory: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    unknown = sorted(set(class_names(directory)) - set(classes))
    if unknown:
        raise UserError(
            f"{directory} has class folders the train split lacks: {', '.join(unknown[:5])}; "
            "every split must use the train split's classes"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        folder = directory / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in EXTENSIONS and not path.name.startswith("."):
                files.append(path)
                labels.append(label)
    return files, labels


def load_folder(
    name: str, directory: Path, image_size: int, hint: str, split: str, classes: list[str] | None = None
) -> PhotoDataset:
    """``directory/<class>/<image>``; ``classes`` (default: the sub-folders) fixes the labels."""
    if not directory.is_dir():
        raise UserError(f"{name} ({split}) not found — looked in {directory}; {hint}")
    classes = classes if classes is not None else class_names(directory)
    files, labels = _scan(directory, classes)
    if not files:
        raise UserError(
            f"{name} ({split}): no images under {directory}; expected {directory}/<class>/<image>.jpg"
        )
    used = sorted(set(labels))
    if len(classes) < 2 or (split == "train" and len(used) < 2):
        found = ", ".join(repr(classes[i]) for i in used)
        raise UserError(
            f"{name} ({split}): {directory} has images of one class only ({found}); a classifier needs "
            f"at least 2 classes: {directory}/<class>/<image>.jpg for each"
        )
    info = DatasetInfo(name, len(classes), 3, image_size, tuple(classes), IMAGENET_MEAN, IMAGENET_STD)
    return PhotoDataset(PhotoFiles(files), torch.as_tensor(labels), info)


def _split_dir(base: Path, split: str) -> Path:
    """``base/split``; ``test`` reads ``val`` when there is no ``test`` (ImageNet's layout)."""
    if split == "test" and not (base / "test").is_dir() and (base / "val").is_dir():
        return base / "val"
    return base / split


def _split_classes(base: Path) -> list[str] | None:
    return class_names(base / "train") if (base / "train").is_dir() else None


def _named_base(root: str | None, folder: str) -> Path:
    """``--data-dir`` itself when it holds ``train/``, else ``<data dir>/<folder>``."""
    if root is not None and (Path(root).expanduser() / "train").is_dir():
        return Path(root).expanduser()
    return data_dir(root) / folder


def imagenet(root=None, split="train", download=False, image_size: int = 224) -> PhotoDataset:
    """ImageNet-1k from ``DIR/train/<wnid>/`` and ``DIR/val/<wnid>/`` (``test`` reads ``val``)."""
    if download:
        raise UserError("ImageNet cannot be downloaded automatically; get it from image-net.org")
    base = _named_base(root, "imagenet")
    return load_folder(
        "imagenet",
        _split_dir(base, split),
        image_size,
        "unpack ImageNet as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG and pass --data-dir DIR",
        split,
        _split_classes(base),
    )


def cub200(root=None, split="train", download=False, image_size: int = 224) -> PhotoDataset:
    """CUB-200-2011 arranged as ``DIR/train/<class>/`` and ``DIR/test/<class>/``."""
    if download:
        raise UserError("CUB-200-2011 is not downloadable through torchvision; arrange it as an image folder")
    base = _named_base(root, "cub200")
    return load_folder(
        "cub200",
        _split_dir(base, split),
        image_size,
        "arrange CUB-200-2011 as DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg, pass --data-dir DIR",
        split,
        _split_classes(base),
    )


def imagefolder(
    root=None, split="train", download=False, image_size: int = 224, path: str | None = None
) -> PhotoDataset:
    """Your own images: ``path/<split>/<class>/`` or one ``path/<class>/`` folder (split 80/20)."""
    base = Path(path).expanduser() if path else data_dir(root)
    hint = "point `path` (or --data-dir) at a folder with one sub-folder of images per class"
    if any((base / s).is_dir() for s in SPLIT_DIRS):
        directory = _split_dir(base, split)
        return load_folder("imagefolder", directory, image_size, hint, split, _split_classes(base))
    everything = load_folder("imagefolder", base, image_size, hint, split)
    train, test = holdout_split(len(everything), HOLDOUT_FRACTION, HOLDOUT_SEED)
    part = train if split == "train" else test
    if len(part) == 0:
        raise UserError(
            f"imagefolder ({split}): {base} holds {len(everything)} image(s), too few to hold "
            f"{HOLDOUT_FRACTION:.0%} out for testing; add images, or give {base}/train and {base}/test"
        )
    return everything.subset(part)
