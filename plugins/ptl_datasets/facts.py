"""What a built-in dataset is, known without its files: class count, channels, image side.

A plan (``--dry-run``, and every new run before it loads data) checks class indices and image
sizes against these, so ``--classes 0,12`` on a 10-class dataset fails before anything is
read. Only datasets whose classes are fixed by the dataset itself are listed; folders
(ImageNet, CUB, your own) and sets whose class list torchvision derives from the labels are
not, and are checked when they load. Torch-free: registered as ``facts="ptl_datasets.facts:of"``
and read through :meth:`ptl_cli.registry.ComponentSpec.facts`, so a third-party dataset of the
same name has none.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    return None
