"""Fashion-MNIST: the bundled pack (package data) and the full dataset from known locations.

The transfer quickstart mirrors ImageNet -> fine-grained targets inside Fashion-MNIST: the train
split is cut into two seeded, class-stratified halves; the bundled source models see only half A,
with *coarse* labels (top, trouser, footwear, bag), and the pack's training images come only from
half B, where the target's fine classes (T-shirt, Pullover, ... Ankle boot) are labeled. So no
source model sees a target image, and the label sets are disjoint while the content is covered.
"""

from __future__ import annotations

import gzip
import math
from functools import lru_cache
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
#: The coarse label of each fine class: Dress is a one-piece upper-body garment, so a "top".
COARSE_NAMES = ("top", "trouser", "footwear", "bag")
COARSE_OF = (0, 1, 0, 0, 0, 2, 0, 2, 3, 2)
HALF_SEED = 0  # the seed of the A/B halves of the train split: fixed, the bundled models depend on it
MEAN, STD = (0.2860,), (0.3530,)
PACK_PATH = Path(__file__).parent / "data" / "fashion-pack.safetensors"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


#: The pack's validation split: this many images per class of its train split, seeded; "fit" is the rest.
PACK_VAL_PER_CLASS = 100
PACK_VAL_SEED = 0


#: k-means of the visual clusters (``clusters=k``): seeded k-means++ then this many Lloyd rounds.
CLUSTER_SEED, CLUSTER_ROUNDS = 0, 30


def info(name: str, coarse: bool = False, clusters: int = 0) -> DatasetInfo:
    """Fashion-MNIST's metadata (the pack and the full dataset share it)."""
    if coarse and clusters:
        names = tuple(f"{c}-{j + 1}" for c in COARSE_NAMES for j in range(clusters))
        return DatasetInfo(name, len(names), 1, 28, names, MEAN, STD)
    if coarse:
        return DatasetInfo(name, len(COARSE_NAMES), 1, 28, COARSE_NAMES, MEAN, STD)
    return DatasetInfo(name, 10, 1, 28, CLASS_NAMES, MEAN, STD)


def _check_split(split: str, allowed: tuple[str, ...] = tuple(_FILES)) -> str:
    if split not in allowed:
        names = ", ".join(repr(s) for s in allowed[:-1]) + f" and {allowed[-1]!r}"
        raise UserError(f"Fashion-MNIST has splits {names}, not {split!r}")
    return split


def half_indices(labels: torch.Tensor, half: str, seed: int = HALF_SEED) -> torch.Tensor:
    """Sorted indices of half ``A`` or ``B`` of a split: per class, a seeded permutation's first
    (A) or second (B) half, so both halves keep the class balance and never overlap."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for cls in range(int(labels.max()) + 1):
        idx = torch.nonzero(labels == cls).flatten()
        perm = idx[torch.randperm(idx.numel(), generator=gen)]
        cut = perm.numel() // 2
        keep.append(perm[:cut] if half == "A" else perm[cut:])
    return torch.sort(torch.cat(keep)).values


def to_coarse(labels: torch.Tensor) -> torch.Tensor:
    """Fine labels (0-9) -> coarse labels (0 top, 1 trouser, 2 footwear, 3 bag)."""
    return torch.as_tensor(COARSE_OF, dtype=torch.long)[labels]


def _kmeans(points: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` centroids of ``points`` (rows, float64): k-means++ seeding, then Lloyd rounds."""
    centroids = [points[int(torch.randint(len(points), (1,), generator=gen))]]
    nearest = ((points - centroids[0]) ** 2).sum(1)
    for _ in range(k - 1):
        pick = int(torch.multinomial(nearest / nearest.sum(), 1, generator=gen))
        centroids.append(points[pick])
        nearest = torch.minimum(nearest, ((points - centroids[-1]) ** 2).sum(1))
    centres = torch.stack(centroids)
    for _ in range(CLUSTER_ROUNDS):
        assign = torch.cdist(points, centres).argmin(1)
        for j in range(k):
            members = assign == j
            if members.any():
                centres[j] = points[members].mean(0)
    return centres


@lru_cache(maxsize=4)
def cluster_centres(root: str | None, k: int) -> tuple[torch.Tensor, ...]:
    """Per coarse class, ``k`` k-means centroids of the pixels of half A's images of that class.

    They are computed from half A only (the source side), so labeling any image by its nearest
    centroid never looks at a target image or a fine label.
    """
    half_a = load_full(root, "train", half="A", coarse=True)
    gen = torch.Generator().manual_seed(CLUSTER_SEED)
    points = half_a.images.flatten(1).double() / 255.0
    return tuple(_kmeans(points[half_a.targets == c], k, gen) for c in range(len(COARSE_NAMES)))


def to_clusters(
    images: torch.Tensor, coarse: torch.Tensor, centres: tuple[torch.Tensor, ...]
) -> torch.Tensor:
    """Label ``coarse*k + j``: the coarse class and the nearest of its ``k`` centroids."""
    k = centres[0].shape[0]
    points = images.flatten(1).double() / 255.0
    labels = torch.empty_like(coarse)
    for c, centre in enumerate(centres):
        members = coarse == c
        if members.any():
            labels[members] = c * k + torch.cdist(points[members], centre).argmin(1)
    return labels


def pack_val_indices(labels: torch.Tensor) -> torch.Tensor:
    """The pack's validation images: ``PACK_VAL_PER_CLASS`` per class of its train split, seeded."""
    from ptl_cli.data.splits import per_class_split

    return per_class_split(labels, PACK_VAL_PER_CLASS, PACK_VAL_SEED)[0]


def load_pack(
    root: str | None = None, split: str = "train", download: bool = False, coarse: bool = False
) -> TensorImageDataset:
    """The bundled subset: real Fashion-MNIST images made by ``scripts/make_data_pack.py``.

    Splits: ``train`` (half B of the full train split only), ``test``, and for tuning without the
    test split ``val`` (100/class of ``train``, seeded) and ``fit`` (the rest of ``train``).
    """
    from safetensors.torch import load_file

    split = _check_split(split, ("train", "test", "fit", "val"))
    if not PACK_PATH.is_file():
        raise UserError(
            f"the bundled pack {PACK_PATH} is missing; rebuild it with `python scripts/make_data_pack.py`"
        )
    tensors = load_file(str(PACK_PATH))
    part = "test" if split == "test" else "train"
    images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
    if split in ("fit", "val"):
        val = pack_val_indices(labels)
        mask = torch.zeros(labels.numel(), dtype=torch.bool)
        mask[val] = True
        keep = val if split == "val" else torch.nonzero(~mask).flatten()
        images, labels = images[keep], labels[keep]
    if coarse:
        labels = to_coarse(labels)
    return TensorImageDataset(images, labels, info("fashion-pack", coarse))


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


def load_full(
    root: str | None = None,
    split: str = "train",
    download: bool = False,
    half: str = "all",
    coarse: bool = False,
    clusters: int = 0,
) -> TensorImageDataset:
    """All 60k/10k images from the first location that has them (downloads with ``download``).

    ``half`` ("A"/"B") keeps one seeded half of the *train* split (the test split is always whole:
    it is for measuring, and no model trains on it); ``coarse`` maps labels to the 4 superclasses;
    ``clusters=k`` (with ``coarse``, which the parameter schema checks before anything loads)
    splits each into ``k`` visual clusters (:func:`cluster_centres`).
    """
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
    if half != "all" and split == "train":
        keep = half_indices(labels, half)
        images, labels = images[keep], labels[keep]
    if coarse:
        labels = to_coarse(labels)
    if clusters:
        labels = to_clusters(images, labels, cluster_centres(root, clusters))
    return TensorImageDataset(images, labels, info("fashion-mnist", coarse, clusters))
