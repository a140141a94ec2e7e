"""Fashion-MNIST: the bundled pack (package data) and the full dataset from known locations."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch

from ptl_cli.data.base import DatasetInfo, TensorImageDataset
from ptl_cli.data.locations import data_dir
from ptl_cli.errors import UserError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MEAN, STD = (0.2860,), (0.3530,)
PACK_PATH = Path(__file__).parent / "data" / "fashion-pack.safetensors"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def info(name: str) -> DatasetInfo:
    """Fashion-MNIST's metadata (the pack and the full dataset share it)."""
    return DatasetInfo(name, 10, 1, 28, CLASS_NAMES, MEAN, STD)


def _check_split(split: str) -> str:
    if split not in _FILES:
        raise UserError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    return split


def load_pack(root: str | None = None, split: str = "train", download: bool = False) -> TensorImageDataset:
    """The bundled subset: real Fashion-MNIST images made by ``scripts/make_data_pack.py``."""
    from safetensors.torch import load_file

    split = _check_split(split)
    if not PACK_PATH.is_file():
        raise UserError(
            f"the bundled pack {PACK_PATH} is missing; rebuild it with `python scripts/make_data_pack.py`"
        )
    tensors = load_file(str(PACK_PATH))
    return TensorImageDataset(tensors[f"{split}_images"], tensors[f"{split}_labels"], info("fashion-pack"))


def candidate_dirs(root: str | Path | None) -> list[Path]:
    """Where full Fashion-MNIST may be, in order: under ``--data-dir`` (or the default data
    directory) in torchvision's layout, as ``fashion-mnist/``, or loose; then Debian's package."""
    base = data_dir(None if root is None else str(root))
    return [base / "FashionMNIST" / "raw", base / "fashion-mnist", base, DEBIAN_DIR]


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (optionally gzipped) into a uint8 tensor.

    A truncated or foreign file is a one-line :class:`UserError` naming it, not a traceback
    from deep inside a reshape.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} cannot be read ({type(exc).__name__}: {exc}); fetch it again") from None
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise UserError(f"{path} is not an IDX file of unsigned bytes; fetch it again")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = data[4 + 4 * ndim :]
    if len(shape) != ndim or math.prod(shape) != len(body):
        raise UserError(f"{path} is truncated or corrupt (header says {shape}); fetch it again")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).view(*shape)


def find_files(root: str | Path | None, split: str) -> tuple[Path, Path] | None:
    images, labels = _FILES[split]
    for directory in candidate_dirs(root):
        for suffix in (".gz", ""):
            img, lab = directory / (images + suffix), directory / (labels + suffix)
            if img.is_file() and lab.is_file():
                return img, lab
    return None


def load_full(root: str | None = None, split: str = "train", download: bool = False) -> TensorImageDataset:
    """All 60k/10k images from the first location that has them (downloads with ``download``)."""
    split = _check_split(split)
    found = find_files(root, split)
    if found is None and download:
        target = data_dir(root)
        from torchvision.datasets import FashionMNIST

        try:
            FashionMNIST(str(target), train=split == "train", download=True)
        except Exception as exc:  # noqa: BLE001 - network errors come in many types
            raise UserError(f"downloading Fashion-MNIST into {target} failed: {exc}") from None
        found = find_files(root, split)
    if found is None:
        looked = ", ".join(str(d) for d in candidate_dirs(root))
        raise UserError(
            f"Fashion-MNIST not found — looked in {looked}; get it with `apt-get install "
            "dataset-fashion-mnist`, or pass --download (needs internet)"
        )
    images = read_idx(found[0]).unsqueeze(1).contiguous()
    labels = read_idx(found[1]).long()
    if images.shape[0] != labels.shape[0] or images.shape[-2:] != (28, 28):
        raise UserError(f"{found[0].parent}: images and labels of Fashion-MNIST ({split}) do not match")
    return TensorImageDataset(images, labels, info("fashion-mnist"))
