"""``ptl bench photo``: ptl's photo loader against torchvision's ``ImageFolder`` + PIL loader.

Both read the same JPEG folder with the same worker count and batch size, and both give uint8
batches of random-resized crops (training) or ``Resize + CenterCrop`` views (evaluation):

* **ptl**: :class:`ptl_cli.data.photo.PhotoDataset` items -- ``torchvision.io.decode_jpeg`` on
  the file bytes, crop and antialiased resize on uint8 tensors, one batched fetch per batch (the
  flip is left to the training device, as the prune workflow does);
* **torchvision**: ``datasets.ImageFolder`` (PIL decode) with ``transforms.v2``
  ``RandomResizedCrop + RandomHorizontalFlip + ToImage`` (training) or ``Resize + CenterCrop +
  ToImage`` (evaluation) and the default collation -- the usual ImageNet loader.

Each repetition reads the whole folder once with each loader, in turn (ptl, torchvision, ptl,
...), so a change in machine load hits both; the report gives images/s per worker (median over
the repetitions) and the ptl / torchvision speed-up as the median and quartiles of the
per-repetition ratios. Workers are persistent and warmed up first, so worker start-up is not
timed; pinned memory is off (CPU batches). Without ``--data-dir`` the folder is ``--photos``
generated 500×375 JPEGs (quality 90) in a temporary directory: the bundled Fashion-MNIST images
as the channels of a mosaic, upscaled, with photographic grain.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ptl_cli.errors import UserError

PHOTO_SIZE = (500, 375)  # width, height: a typical ImageNet photo


def make_photos(root: Path, count: int, size: tuple[int, int] = PHOTO_SIZE, classes: int = 4) -> Path:
    """``count`` JPEGs under ``root/<class>/``, made from the bundled pack (no download)."""
    import numpy as np
    import torch
    from PIL import Image

    from ptl_cli import plugins

    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False).images[:, 0]
    rng = np.random.default_rng(0)
    n = pack.shape[0]
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    for k in range(count):
        tiles = [
            torch.cat(
                [
                    torch.cat([pack[(97 * k + 31 * ch + 7 * t) % n] for t in (0, 1)], 1),
                    torch.cat([pack[(97 * k + 31 * ch + 7 * t) % n] for t in (2, 3)], 1),
                ],
                0,
            )
            for ch in range(3)
        ]
        rgb = Image.fromarray(torch.stack(tiles, -1).numpy(), mode="RGB").resize(size, Image.BICUBIC)
        grain = rng.normal(0.0, 6.0, (size[1], size[0], 3))
        pixels = (np.asarray(rgb, dtype=np.float64) + grain).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"class{k % classes}" / f"{k:05d}.jpg", quality=90)
    return root


def _loaders(root: Path, batch_size: int, workers: int, image_size: int) -> dict[str, Iterable[Any]]:
    """The four loaders over ``root``: ptl and torchvision, training and evaluation views."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    from ptl_cli.data.base import DatasetInfo, collate
    from ptl_cli.data.photo import PhotoDataset, PhotoFiles, eval_resize
    from ptl_cli.data.sampler import ResumableSampler

    reference = datasets.ImageFolder(str(root))
    files = [Path(p) for p, _ in reference.samples]
    labels = torch.as_tensor([label for _, label in reference.samples])
    names = tuple(reference.classes)
    info = DatasetInfo("bench-photos", len(names), 3, image_size, names, (0.5,) * 3, (0.5,) * 3)
    photos = PhotoDataset(PhotoFiles(files), labels, info)
    crops = photos.random_crops(seed=0)
    sampler = ResumableSampler(len(crops), seed=0, keyed=True)
    common = {"batch_size": batch_size, "num_workers": workers, "persistent_workers": workers > 0}

    train_tv = datasets.ImageFolder(
        str(root),
        transform=v2.Compose([v2.RandomResizedCrop(image_size), v2.RandomHorizontalFlip(), v2.ToImage()]),
    )
    eval_tv = datasets.ImageFolder(
        str(root),
        transform=v2.Compose([v2.Resize(eval_resize(image_size)), v2.CenterCrop(image_size), v2.ToImage()]),
    )
    return {
        "ptl train": DataLoader(crops, sampler=sampler, collate_fn=collate, **common),
        "torchvision train": DataLoader(train_tv, shuffle=True, **common),
        "ptl eval": DataLoader(photos, sampler=list(range(len(photos))), collate_fn=collate, **common),
        "torchvision eval": DataLoader(eval_tv, shuffle=False, **common),
    }


def _epoch_seconds(loader: Iterable[Any]) -> tuple[float, int]:
    """Wall seconds to read every batch once, and the number of images read."""
    started, images = time.perf_counter(), 0
    for batch in loader:
        images += int(batch[0].shape[0])
    return time.perf_counter() - started, images


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q2, q1, q3


def bench_photo(
    data_dir: str | None,
    photos: int,
    batch_size: int,
    workers: int,
    image_size: int,
    reps: int,
    flags: dict[str, Any],
    echo: Callable[[str], None] = lambda _: None,
) -> Any:
    """A :class:`ptl_cli.bench.Report` of the four loaders (see the module), ``reps`` interleaved."""
    from ptl_cli.bench import Report, Row

    if reps < 1 or photos < 1 or batch_size < 1 or image_size < 8:
        raise UserError("--reps, --photos and --batch-size must be >= 1 and --image-size >= 8")
    with tempfile.TemporaryDirectory(prefix="ptl-bench-photos-") as tmp:
        if data_dir is None:
            echo(f"making {photos} {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} JPEGs in {tmp} ...")
            root = make_photos(Path(tmp), photos)
        else:
            root = Path(data_dir).expanduser()
            if (root / "train").is_dir():
                root = root / "train"
            if not root.is_dir():
                raise UserError(f"--data-dir {data_dir}: not a folder of <class>/<image> files")
        try:
            loaders = _loaders(root, batch_size, workers, image_size)
        except (FileNotFoundError, RuntimeError) as exc:  # ImageFolder: no class folders / images
            raise UserError(f"--data-dir {root}: {exc}") from None
        for loader in loaders.values():  # warm-up: workers started, files in the page cache
            _epoch_seconds(loader)
        seconds: dict[str, list[float]] = {name: [] for name in loaders}
        counts: dict[str, int] = {}
        for _ in range(reps):
            for name, loader in loaders.items():
                spent, counts[name] = _epoch_seconds(loader)
                seconds[name].append(spent)
    report = Report(
        "photo",
        "cpu",
        {
            "images": counts["ptl train"],
            "folder": "generated" if data_dir is None else str(data_dir),
            "batch_size": batch_size,
            "image_size": image_size,
            "reps": reps,
            **flags,
        },
    )
    per = max(1, workers)
    for name, times in seconds.items():
        median, q1, q3 = _quartiles(times)
        note = f"{counts[name] / per / median:,.0f} images/s per worker; IQR {q1 * 1e3:.0f}-{q3 * 1e3:.0f} ms"
        report.rows.append(Row(f"{name} (folder)", counts[name], median, note))
    for view in ("train", "eval"):
        ratios = [b / a for a, b in zip(seconds[f"ptl {view}"], seconds[f"torchvision {view}"], strict=True)]
        median, q1, q3 = _quartiles(ratios)
        report.ratios[f"{view}_ptl_vs_torchvision_speed"] = median
        report.ratios[f"{view}_speed_q1"] = q1
        report.ratios[f"{view}_speed_q3"] = q3
    return report
