"""Building the augmented, normalized views an SSL algorithm asks for.

View names: ``"none"`` (no augmentation), ``"weak"`` (random flip + reflect-pad-and-crop, the
core's :func:`ptl_cli.data.augment.weak`) and ``"strong"`` (the weak flip/crop, then RandAugment
and Cutout, as FixMatch's strong transform). Augmentation happens on [0, 1] images; each view is
normalized afterwards, so Cutout's gray and the affine fill mean the same on every dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ptl_cli.data.augment import weak
from ptl_cli.data.base import normalize
from ptl_cli.data.randaugment import strong

VIEW_NAMES: tuple[str, ...] = ("none", "weak", "strong")


def crop_padding(images: torch.Tensor) -> int:
    """Pad-crop shift of the weak view: 1/8 of the image side, as the reference code's
    ``padding=int(size * 0.125)`` (4 pixels at 32×32, 28 at 224×224)."""
    return max(1, int(min(images.shape[-2:]) * 0.125))


def weak_view(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The weak augmentation with the padding scaled to the image size.

    Flip and reflect-pad-crop commute with per-channel normalization, so this may also be
    applied to already normalized images (MeanTeacher draws its two weak views that way).
    """
    return weak(images, padding=crop_padding(images), generator=generator)


def make_views(
    images01: torch.Tensor,
    names: Iterable[str],
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
    n_ops: int = 2,
) -> dict[str, torch.Tensor]:
    """``{name: normalize(augment(images01))}`` for each requested view, drawn independently.

    ``images01`` are float images in [0, 1]; uint8 batches (the datasets' storage type) are
    converted first. ``n_ops`` is the number of RandAugment ops of the strong view.
    """
    if images01.dtype == torch.uint8:
        images01 = images01.float().div_(255.0)
    elif not images01.is_floating_point():
        raise TypeError(f"make_views expects float images in [0, 1] or uint8, got {images01.dtype}")
    views: dict[str, torch.Tensor] = {}
    for name in names:
        if name in views:
            continue
        if name == "none":
            augmented = images01
        elif name == "weak":
            augmented = weak_view(images01, generator)
        elif name == "strong":
            augmented = strong(weak_view(images01, generator), n_ops=n_ops, generator=generator)
        else:
            raise ValueError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")
        views[name] = normalize(augmented, mean, std)
    return views
