"""Image-folder datasets (ImageNet, CUB-200, your own images), decoded lazily."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ptl_cli.data.base import DatasetInfo, ImageDataset
from ptl_cli.data.locations import data_dir
from ptl_cli.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class LazyImageDataset(ImageDataset):
    """Items decoded on access by ``load(index) -> uint8 C×H×W``; labels known up front."""

    def __init__(self, load: Callable[[int], torch.Tensor], targets: torch.Tensor, info: DatasetInfo) -> None:
        self._load = load
        self.targets = targets.long()
        self.info = info

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._load(index), int(self.targets[index])


def photo_transform(image, size: int) -> torch.Tensor:
    """PIL image -> uint8 RGB tensor: resize the short side to ``size``, centre-crop a square."""
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    image = image.convert("RGB")
    image = resize(image, size, antialias=True)
    return pil_to_tensor(center_crop(image, [size, size]))


def _scan(directory: Path) -> tuple[list[Path], list[int], list[str]]:
    classes = sorted(p.name for p in directory.iterdir() if p.is_dir())
    files, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((directory / name).rglob("*")):
            if path.suffix.lower() in EXTENSIONS:
                files.append(path)
                labels.append(label)
    return files, labels, classes


def load_folder(name: str, directory: Path, image_size: int, hint: str, split: str) -> LazyImageDataset:
    if not directory.is_dir():
        raise UserError(f"{name} ({split}) not found — looked in {directory}; {hint}")
    files, labels, classes = _scan(directory)
    if not files:
        raise UserError(f"{name}: no images under {directory}; expected {directory}/<class>/<image>.jpg")
    from PIL import Image

    def load(index: int) -> torch.Tensor:
        with Image.open(files[index]) as image:
            return photo_transform(image, image_size)

    info = DatasetInfo(name, len(classes), 3, image_size, tuple(classes), IMAGENET_MEAN, IMAGENET_STD)
    return LazyImageDataset(load, torch.as_tensor(labels), info)


def _split_dir(base: Path, split: str) -> Path:
    return base / ("val" if split == "test" and (base / "val").is_dir() else split)


def imagenet(root=None, split="train", download=False, image_size: int = 224) -> LazyImageDataset:
    if download:
        raise UserError("ImageNet cannot be downloaded automatically; get it from image-net.org")
    base = data_dir(root) / "imagenet" if not (Path(root or "") / "train").is_dir() else Path(root)
    return load_folder(
        "imagenet",
        _split_dir(base, split),
        image_size,
        "unpack ImageNet as DIR/train/<wnid>/*.JPEG and DIR/val/<wnid>/*.JPEG and pass --data-dir DIR",
        split,
    )


def cub200(root=None, split="train", download=False, image_size: int = 224) -> LazyImageDataset:
    if download:
        raise UserError("CUB-200-2011 is not downloadable through torchvision; arrange it as an image folder")
    base = data_dir(root) / "cub200" if not (Path(root or "") / "train").is_dir() else Path(root)
    return load_folder(
        "cub200",
        _split_dir(base, split),
        image_size,
        "arrange CUB-200-2011 as DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg, pass --data-dir DIR",
        split,
    )


def imagefolder(
    root=None, split="train", download=False, image_size: int = 224, path: str | None = None
) -> LazyImageDataset:
    base = Path(path).expanduser() if path else data_dir(root)
    directory = base / split if (base / split).is_dir() else base
    return load_folder(
        "imagefolder",
        directory,
        image_size,
        "point `path` (or --data-dir) at a folder with one sub-folder of images per class",
        split,
    )
