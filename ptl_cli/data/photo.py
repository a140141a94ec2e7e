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

Decoding, cropping and resizing run on uint8 tensors, the path ``torchvision.transforms.v2`` takes
on tensor images (``v2.ToImage()`` first): JPEG files are decoded by ``torchvision.io.decode_jpeg``
from their bytes (libjpeg-turbo, the same pixels as PIL's ``Image.open(...).convert("RGB")``;
other formats, CMYK JPEGs and images a dataset hands over as PIL go through PIL), and resized
by torch's antialiased bilinear uint8 kernel. Items equal v2 on tensor images exactly; against v2
on PIL images (PIL's own resize filter) a few percent of the pixels differ by one grey level.
Batches are fetched with ``__getitems__`` into one uint8 tensor (in shared memory in a worker),
so the loader moves one tensor per batch rather than one per image.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ptl_cli.data.base import DatasetInfo, ImageDataset
from ptl_cli.errors import UserError

#: torchvision's RandomResizedCrop defaults (Inception-style crops).
CROP_SCALE: tuple[float, float] = (0.08, 1.0)
CROP_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
#: Attempts at a crop that fits before falling back to a centre crop (as torchvision).
CROP_TRIES = 10


def eval_resize(size: int) -> int:
    """Short side before the evaluation centre crop: 256 for 224, scaled for other sizes."""
    return round(size * 256 / 224)


def eval_transform(image: Any, size: int) -> torch.Tensor:
    """uint8 RGB ``(3, H, W)`` (or a PIL image) -> ``(3, size, size)``: short side to
    :func:`eval_resize` (bilinear, antialiased), then the centre crop."""
    from torchvision.transforms.v2 import functional as TF

    image = TF.resize(as_tensor(image), [eval_resize(size)], antialias=True)
    return TF.center_crop(image, [size, size]).contiguous()


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
    """The ``box`` of a uint8 ``(3, H, W)`` image (or a PIL image) resized to ``size × size``
    (bilinear, antialiased), as uint8."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w = box
    return TF.resized_crop(as_tensor(image), top, left, h, w, [size, size], antialias=True).contiguous()


def as_tensor(image: Any) -> torch.Tensor:
    """A PIL image as uint8 RGB ``(3, H, W)``; tensors are returned as they are."""
    if isinstance(image, torch.Tensor):
        return image
    from torchvision.transforms.v2 import functional as TF

    return TF.pil_to_tensor(_rgb(image))  # a (3, H, W) view of H×W×3: resized faster as is


def decode_file(path: Any) -> torch.Tensor:
    """Image file -> uint8 RGB ``(3, H, W)``, the pixels ``Image.open(path).convert("RGB")`` gives.

    The result keeps the decoder's height × width × channel memory order (a permuted view): torch's
    antialiased uint8 resize is about twice as fast from it as from a contiguous copy.

    JPEGs in YCbCr or greyscale are decoded by ``torchvision.io.decode_jpeg`` from the file's
    bytes (about twice as fast as PIL's decode, copy and conversion to a tensor); greyscale is
    repeated to RGB as PIL's conversion does. Everything else (PNG, CMYK JPEGs, ...) goes
    through PIL.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with open(path, "rb") as f:
        data = f.read()
    if data[:3] == b"\xff\xd8\xff":
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its codecs for TorchCodec's, warning on every call;
                # they are still the libjpeg-turbo path, and what this torchvision pins
                warnings.simplefilter("ignore", DeprecationWarning)
                raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
                image = decode_jpeg(raw, ImageReadMode.UNCHANGED)
        except RuntimeError:  # a JPEG libjpeg refuses here (e.g. CMYK): PIL decides
            image = None
        if image is not None and image.shape[0] == 3:
            return image
        if image is not None and image.shape[0] == 1:
            return image.expand(3, -1, -1).contiguous()
    import io

    with open_image(io.BytesIO(data), path) as opened:
        return as_tensor(rgb_image(opened, path))


def open_image(source: Any, path: Any) -> Any:
    """``PIL.Image.open``, with a file PIL cannot read named in one line (a UserError)."""
    from PIL import Image

    try:
        return Image.open(source)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc})") from None


def rgb_image(image: Any, path: Any = "an image") -> Any:
    """An image in any mode PIL opens as 8-bit RGB with the right pixels, or a UserError naming it.

    PIL's own ``convert("RGB")`` clips 16-bit greyscale (``I;16``) at 255 -- a 16-bit PNG comes
    out nearly white -- so those keep their high byte, as PIL reduces 16-bit RGB. 32-bit integer
    (``I``) and float (``F``) pixels have no one 8-bit reading, so they are refused by name.
    """
    mode = image.mode
    try:
        if mode.startswith("I;16"):
            import numpy as np
            from PIL import Image

            pixels = np.asarray(image).astype(np.uint16)
            return Image.fromarray((pixels >> 8).astype(np.uint8), mode="L").convert("RGB")
        if mode in ("I", "F"):
            kind = "32-bit integer" if mode == "I" else "floating-point"
            raise UserError(
                f"image {path} has {kind} pixels (PIL mode {mode}); ptl reads 8- and 16-bit images: "
                "convert it to 8-bit RGB or greyscale"
            )
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:
        raise UserError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc})") from None


class PhotoFiles:
    """``open(i)``: image file ``i`` decoded; ``tensor(i)`` as uint8 RGB through :func:`decode_file`,
    calling it gives the PIL RGB image. A class, not a closure: workers may be spawned."""

    def __init__(self, files: Sequence[Any]) -> None:
        self.files = list(files)

    def tensor(self, index: int) -> torch.Tensor:
        return decode_file(self.files[index])

    def __call__(self, index: int) -> Any:
        path = self.files[index]
        with open_image(path, path) as image:
            return rgb_image(image, path)


def stack_batch(images: list[torch.Tensor], targets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items -> one uint8 batch and its labels; in a loader worker the batch is written straight
    into shared memory (what the worker would otherwise copy it into to send it)."""
    out = None
    if torch.utils.data.get_worker_info() is not None:
        shape = (len(images), *images[0].shape)
        out = torch.empty(shape, dtype=images[0].dtype).share_memory_()
    return torch.stack(images, out=out), torch.as_tensor(targets, dtype=torch.long)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one image's crop in one epoch (a hash: nearby keys give unrelated seeds)."""
    digest = hashlib.blake2b(f"ptl-crop:{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _rgb(image: Any) -> Any:
    return image if image.mode == "RGB" else rgb_image(image, getattr(image, "filename", "") or "an image")


class PhotoDataset(ImageDataset):
    """Photos decoded on access by ``open_image(i) -> PIL image`` (or its ``tensor(i)``, see
    :meth:`image`); items are the evaluation view.

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

    def image(self, index: int) -> torch.Tensor:
        """Item ``index`` decoded, full size, as uint8 RGB ``(3, H, W)``: through ``open_image``'s
        ``tensor(i)`` when it has one (:class:`PhotoFiles`), else from its PIL image."""
        source = index if self.order is None else self.order[index]
        tensor = getattr(self.open_image, "tensor", None)
        return tensor(source) if tensor is not None else as_tensor(self.open_image(source))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return eval_transform(self.image(index), self.info.image_size), int(self.targets[index])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as one uint8 tensor (see :func:`stack_batch`)."""
        size = self.info.image_size
        images = [eval_transform(self.image(i), size) for i in indices]
        return stack_batch(images, [int(self.targets[i]) for i in indices])

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

    def decoded(self, index: int) -> torch.Tensor:
        """Photo ``index`` as cropped from: decoded, full size, padded by ``pad`` black pixels."""
        image = self.photos.image(index)
        if self.pad:
            image = torch.nn.functional.pad(image, (self.pad,) * 4)
        return image

    def box(self, epoch: int, index: int, image: torch.Tensor | None = None) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of photo ``index``'s crop in ``epoch``."""
        image = self.decoded(index) if image is None else image
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, index))
        height, width = image.shape[-2:]
        return crop_box(height, width, self.scale, self.ratio, generator)

    def crop(self, key: tuple[int, int]) -> torch.Tensor:
        """The uint8 crop of item ``(epoch, index)``."""
        if not isinstance(key, tuple):
            raise TypeError(
                "RandomCrops items are indexed by (epoch, index); use ResumableSampler(..., keyed=True)"
            )
        epoch, index = key
        image = self.decoded(index)
        return resized_crop(image, self.box(epoch, index, image), self.info.image_size)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        return self.crop(key), int(self.targets[key[1]])

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch as one uint8 tensor (see :func:`stack_batch`)."""
        images = [self.crop(key) for key in keys]
        return stack_batch(images, [int(self.targets[key[1]]) for key in keys])
