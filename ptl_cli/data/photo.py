"""Photos of any size, preprocessed as torchvision's ImageNet recipe does it, one image at a time.

Photos (ImageNet, Stanford Cars, an image folder, ...) come in many sizes, so they cannot be
batched before they are cropped: their preprocessing runs per image, lazily, in the DataLoader
workers, and gives fixed-size uint8 tensors that the training device then batches.

- Evaluation (a :class:`PhotoDataset` item): resize the short side to ``round(size·256/224)``
  (bilinear, antialiased), then centre-crop ``size`` -- ``Resize(256) + CenterCrop(224)`` at 224.
- Training (a :class:`RandomCrops` item): RandomResizedCrop from the *full* decoded image --
  torchvision's sampling (area share in ``scale``, log-uniform aspect in ``ratio``, 10 tries,
  then a centre crop clamped to ``ratio``) -- resized to ``size``. The flip is left to the
  device, after the crop, as in torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip``.

The crop of image ``i`` in epoch ``e`` is drawn from its own generator seeded by
``(seed, e, i)``: it does not depend on the worker, the rank or where a run was resumed, so
N ranks crop every image exactly as one process does and a resumed run crops as an uninterrupted
one. Training items are therefore indexed by ``(epoch, index)`` keys, which
:class:`ptl_cli.data.sampler.ResumableSampler` yields with ``keyed=True``.

Decoding and resizing go through PIL (``Image.open(...).convert("RGB")``, PIL's bilinear filter),
the path ``torchvision.transforms.v2`` takes on PIL images, so items equal torchvision's exactly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ptl_cli.data.base import DatasetInfo, ImageDataset

#: torchvision's RandomResizedCrop defaults (Inception-style crops).
CROP_SCALE: tuple[float, float] = (0.08, 1.0)
CROP_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
#: Attempts at a crop that fits before falling back to a centre crop (as torchvision).
CROP_TRIES = 10


def eval_resize(size: int) -> int:
    """Short side before the evaluation centre crop: 256 for 224, scaled for other sizes."""
    return round(size * 256 / 224)


def eval_transform(image: Any, size: int) -> torch.Tensor:
    """PIL image -> uint8 RGB ``(3, size, size)``: short side to :func:`eval_resize`, centre crop."""
    from torchvision.transforms.v2 import functional as TF

    image = TF.resize(_rgb(image), [eval_resize(size)], antialias=True)
    return TF.pil_to_tensor(TF.center_crop(image, [size, size]))


def crop_box(
    height: int,
    width: int,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """``(top, left, crop height, crop width)`` of a random-resized crop of a ``height × width`` image.

    Draws an area share uniform in ``scale`` and an aspect ratio log-uniform in ``ratio``, keeps
    the first of :data:`CROP_TRIES` draws that fits and places it uniformly; if none fits, the
    largest centred crop whose aspect lies in ``ratio``. The numbers are drawn with the same
    torch calls, in the same order and precision, as ``torchvision.transforms.v2``, so one
    generator state gives torchvision's crop.
    """
    area = height * width
    log_lo, log_hi = torch.log(torch.tensor(ratio)).tolist()  # float32, as torchvision keeps it
    for _ in range(CROP_TRIES):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.empty(1).uniform_(log_lo, log_hi, generator=generator).exp_().item()
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator).item())
            return top, left, h, w
    shape = width / height
    if shape < min(ratio):  # too tall: full width, height cut to the tallest allowed aspect
        w, h = width, int(round(width / min(ratio)))
    elif shape > max(ratio):  # too wide
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(image: Any, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """The ``box`` of a PIL image resized to ``size × size`` (bilinear, antialiased), as uint8."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w = box
    return TF.pil_to_tensor(TF.resized_crop(_rgb(image), top, left, h, w, [size, size], antialias=True))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image's crop in one epoch (a hash: nearby keys give unrelated seeds)."""
    digest = hashlib.blake2b(f"ptl-crop:{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _rgb(image: Any) -> Any:
    return image if image.mode == "RGB" else image.convert("RGB")


class PhotoDataset(ImageDataset):
    """Photos decoded on access by ``open_image(i) -> PIL image``; items are the evaluation view.

    :meth:`random_crops` gives the training view of the same photos. ``open_image`` should be
    picklable (a small class rather than a closure) so that workers can be spawned as well as forked.
    """

    def __init__(
        self,
        open_image: Callable[[int], Any],
        targets: torch.Tensor,
        info: DatasetInfo,
        order: Sequence[int] | None = None,
    ) -> None:
        self.open_image = open_image
        self.targets = torch.as_tensor(targets).long()
        self.info = info
        self.order = None if order is None else list(order)

    def image(self, index: int) -> Any:
        """Item ``index`` decoded, full size, as an RGB PIL image."""
        return _rgb(self.open_image(index if self.order is None else self.order[index]))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return eval_transform(self.image(index), self.info.image_size), int(self.targets[index])

    def subset(self, indices: torch.Tensor) -> PhotoDataset:
        """The photos at ``indices`` (still decoded lazily), with their labels."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        picked = indices.tolist() if self.order is None else [self.order[i] for i in indices.tolist()]
        return PhotoDataset(self.open_image, self.targets[indices], self.info, picked)

    def random_crops(
        self,
        seed: int,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        pad: int = 0,
    ) -> RandomCrops:
        """The training view: per-epoch random-resized crops of the full photos (see the module)."""
        return RandomCrops(self, seed, scale, ratio, pad)


class RandomCrops(ImageDataset):
    """Random-resized crops of a :class:`PhotoDataset`, indexed by ``(epoch, index)`` keys.

    ``pad`` pixels of black are added around the decoded photo before cropping (a recipe's
    "pad, then random-resized crop"; 0 is torchvision's ImageNet recipe).
    """

    #: Items depend on the epoch: index with ``(epoch, index)`` (``ResumableSampler(keyed=True)``).
    epoch_keyed = True

    def __init__(
        self,
        photos: PhotoDataset,
        seed: int,
        scale: tuple[float, float] = CROP_SCALE,
        ratio: tuple[float, float] = CROP_RATIO,
        pad: int = 0,
    ) -> None:
        self.photos = photos
        self.seed = seed
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.pad = pad
        self.targets = photos.targets
        self.info = photos.info

    def decoded(self, index: int) -> Any:
        """Photo ``index`` as cropped from: decoded, full size, padded by ``pad``."""
        image = self.photos.image(index)
        if self.pad:
            from PIL import ImageOps

            image = ImageOps.expand(image, border=self.pad, fill=0)
        return image

    def box(self, epoch: int, index: int, image: Any | None = None) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of photo ``index``'s crop in ``epoch``."""
        image = self.decoded(index) if image is None else image
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        return crop_box(image.height, image.width, self.scale, self.ratio, generator)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        if not isinstance(key, tuple):
            raise TypeError(
                "RandomCrops items are indexed by (epoch, index); use ResumableSampler(..., keyed=True)"
            )
        epoch, index = key
        image = self.decoded(index)
        crop = resized_crop(image, self.box(epoch, index, image), self.info.image_size)
        return crop, int(self.targets[index])
