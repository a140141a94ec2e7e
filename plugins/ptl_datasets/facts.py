"""What a built-in dataset is, known without its files: class count, channels, image side.

A plan (``--dry-run``, and every new run before it loads data) checks class indices and image
sizes against these, so ``--classes 0,12`` on a 10-class dataset fails before anything is
read. Only datasets whose classes are fixed by the dataset itself are listed, and ``imagefolder``
with a ``path``, whose classes are its folders' names (read without decoding an image); ImageNet,
CUB and sets whose class list torchvision derives from the labels are checked when they load.
Torch-free: registered as ``facts="ptl_datasets.facts:of"`` and read through
:meth:`ptl_cli.registry.ComponentSpec.facts`, so a third-party dataset of the same name has none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Facts:
    num_classes: int
    channels: int
    image_size: int


#: name -> (classes, channels, side); photo sets are resized to their ``image_size`` parameter.
FIXED = {
    "mnist": (10, 1, 28),
    "cifar10": (10, 3, 32),
    "cifar100": (100, 3, 32),
    "stl10": (10, 3, 96),
}
PHOTO_CLASSES = {
    "stanford-cars": 196,
    "fgvc-aircraft": 100,
    "oxford-pets": 37,
    "dtd": 47,
    "food101": 101,
    "caltech101": 101,
}


def of(name: str, params: dict[str, Any]) -> Facts | None:
    """The facts of built-in dataset ``name`` with validated ``params``, or None if unknown."""
    if name in ("fashion-pack", "fashion-mnist"):
        coarse = 4 * (params.get("clusters") or 1)  # clusters=k splits each coarse class in k
        return Facts(coarse if params.get("coarse") else 10, 1, 28)
    if name in FIXED:
        return Facts(*FIXED[name])
    if name in PHOTO_CLASSES:
        return Facts(PHOTO_CLASSES[name], 3, int(params.get("image_size", 224)))
    if name == "imagefolder" and params.get("path"):
        return folder_facts(Path(str(params["path"])).expanduser(), int(params.get("image_size", 224)))
    return None


#: Image files a folder dataset reads (``ptl_datasets.folder`` uses the same list).
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS and not p.name.startswith("."))


def _classes(folder: Path) -> dict[str, int]:
    """Class folder -> image count (hidden folders left out), read from the names alone."""
    if not folder.is_dir():
        return {}
    folders = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return {p.name: _count_images(p) for p in folders}


def folder_facts(base: Path, image_size: int) -> Facts:
    """An image folder's class count from its layout (file names only, nothing decoded), with the
    checks its loading makes: so ``--dry-run`` refuses an empty or one-class target folder too.

    Mirrors :func:`ptl_datasets.folder.imagefolder`: ``base/train`` (+ ``test`` or ``val``), or
    one ``base/<class>/`` folder split 80/20."""
    from ptl_cli.errors import UserError

    if not base.is_dir():
        raise UserError(f"imagefolder: {base} not found; point `path` at a folder with a folder per class")
    split_layout = any((base / s).is_dir() for s in ("train", "val", "test"))
    train = _classes(base / "train" if split_layout else base)
    used = [c for c, n in train.items() if n]
    where = base / "train" if split_layout else base
    if len(used) < 2:
        raise UserError(
            f"imagefolder (train): {where} has images of {len(used)} class(es); a classifier needs at least "
            f"2 classes: {where}/<class>/<image>.jpg for each"
        )
    if split_layout:
        test = base / "test" if (base / "test").is_dir() else base / "val"
        if sum(_classes(test).values()) == 0:
            raise UserError(f"imagefolder (test): no images under {test}; expected {test}/<class>/<image>")
    else:
        total = sum(train.values())
        if round(total * 0.2) == 0 or round(total * 0.2) == total:
            raise UserError(
                f"imagefolder: {base} holds {total} image(s), too few to hold 20% out for testing; add "
                f"images, or give {base}/train and {base}/test"
            )
    return Facts(len(train), 3, image_size)
