"""What a built-in dataset is, known without its files: class count, channels, image side.

A plan (``--dry-run``, and every new run before it loads data) checks class indices and image
sizes against these, so ``--classes 0,12`` on a 10-class dataset fails before anything is
read. Only datasets whose classes are fixed by the dataset itself are listed, and ``imagefolder``
with a ``path``, whose classes are its folders' names (read without decoding an image); ImageNet,
CUB and sets whose class list torchvision derives from the labels are checked when they load.
Torch-free: registered as ``facts="ptl_datasets.facts:of"`` and read through
:meth:`ptl_cli.registry.ComponentSpec.facts`, so a third-party dataset of the same name has none.

Likewise ``files="ptl_datasets.facts:files"``: where the files of a dataset that must be placed
by hand (:data:`BY_HAND`, Stanford Cars) are, and whether they are there.
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


@dataclass(frozen=True)
class ByHand:
    """A dataset whose download is gone: the files to place by hand under ``<data dir>/folder``."""

    folder: str
    files: tuple[str, ...]  # a trailing "/" is a folder
    why: str
    docs: str


#: Datasets ptl cannot download although torchvision names them (its ``download=True`` raises).
BY_HAND = {
    "stanford-cars": ByHand(
        "stanford_cars",
        (
            "devkit/cars_meta.mat",
            "devkit/cars_train_annos.mat",
            "cars_train/",
            "cars_test/",
            "cars_test_annos_withlabels.mat",
        ),
        "its download link is dead upstream (pytorch/vision#7545)",
        "docs/transfer.md#stanford-cars-by-hand",
    ),
}


def missing(name: str, root: Path) -> list[str]:
    """The files of by-hand dataset ``name`` that are not under ``root`` (its data directory)."""
    hand = BY_HAND[name]
    where = root / hand.folder
    return [f for f in hand.files if not (where / f.rstrip("/")).exists()]


def _put(name: str, root: Path) -> str:
    hand = BY_HAND[name]
    return f"put {', '.join(hand.files)} in {root / hand.folder} by hand ({hand.docs})"


def by_hand_message(name: str, root: Path) -> str:
    """Why ``--download`` cannot get ``name``, which files go where instead, and the page on it."""
    why = BY_HAND[name].why
    return f"{name} cannot be downloaded: {why}; {_put(name, root)}, then run without --download"


def files(name: str, params: dict[str, Any], root: Path, download: bool) -> str | None:
    """The target data as a plan shows it, for a dataset that must be placed by hand, or None.

    Checked by file names only (nothing is read). Missing files with ``download`` refuse the run
    and its ``--dry-run`` in one line: nothing can fetch them. Missing without ``download`` is only
    reported (a plan made on a laptop for another machine's data still plans); the run then stops
    when it loads the dataset, in the words of :func:`not_found_hint`."""
    from ptl_cli.errors import UserError

    if name not in BY_HAND:
        return None
    import importlib.util

    absent = missing(name, root)
    scipy = "" if importlib.util.find_spec("scipy") else "; its annotations need scipy: pip install scipy"
    if not absent:
        return f"{root / BY_HAND[name].folder} (placed by hand; every file present){scipy}"
    if download:
        raise UserError(by_hand_message(name, root))
    hand = BY_HAND[name]
    lacking = "not found" if len(absent) == len(hand.files) else f"{', '.join(absent)} missing"
    return f"{lacking}; {hand.why}: {_put(name, root)}{scipy}"


def not_found_hint(name: str, root: Path) -> str:
    """The end of a by-hand dataset's "not found" message."""
    return f"{BY_HAND[name].why}: {_put(name, root)}"


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
