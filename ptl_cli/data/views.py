"""Building the augmented, normalized views an SSL algorithm asks for.

View names: ``"none"`` (no augmentation), ``"weak"`` (random flip + reflect-pad-and-crop, the
core's :func:`ptl_cli.data.augment.weak`) and ``"strong"`` (the weak flip/crop, then RandAugment
and Cutout, as FixMatch's strong transform). Augmentation happens on [0, 1] images; each view is
normalized afterwards, so Cutout's gray and the affine fill mean the same on every dataset.

A name may be requested more than once: each request is an independent draw, keyed by the name
for its first draw and ``"name:k"`` for the k-th repeat (``("weak", "weak")`` gives ``"weak"``
and ``"weak:1"``, see :func:`view_keys`). Views are drawn in request order, so an algorithm that
asks for two weak views gets the same random numbers it would get drawing them itself.

The views live in the core's data package (next to :mod:`ptl_cli.data.augment`) because the
transfer workflow, the SSL plugin, benchmarks and the core's contract checks all build them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ptl_cli.data.augment import weak
from ptl_cli.data.base import normalize
from ptl_cli.data.randaugment import Magnitude, strong

VIEW_NAMES: tuple[str, ...] = ("none", "weak", "strong")


def crop_padding(images: torch.Tensor) -> int:
    """Pad-crop shift of the weak view: 1/8 of the image side, as the reference code's
    ``padding=int(size * 0.125)`` (4 pixels at 32×32, 28 at 224×224)."""
    return max(1, int(min(images.shape[-2:]) * 0.125))


def weak_view(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The weak augmentation with the padding scaled to the image size.

    Flip and reflect-pad-crop commute with per-channel normalization, so this may also be
    applied to already normalized images.
    """
    return weak(images, padding=crop_padding(images), generator=generator)


def view_keys(names: Iterable[str]) -> list[str]:
    """The keys :func:`make_views` returns for ``names``, in order: a repeated name gets
    ``"name:1"``, ``"name:2"``, ... after its first occurrence."""
    seen: dict[str, int] = {}
    keys = []
    for name in names:
        k = seen.get(name, 0)
        seen[name] = k + 1
        keys.append(name if k == 0 else f"{name}:{k}")
    return keys


def make_views(
    images01: torch.Tensor,
    names: Iterable[str],
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator | None = None,
    n_ops: int = 2,
    magnitude: Magnitude = "random",
) -> dict[str, torch.Tensor]:
    """``{key: normalize(augment(images01))}`` for each requested view, drawn independently and
    in request order; keys as :func:`view_keys` (a repeated name is a further independent draw).

    ``images01`` are float images in [0, 1]; uint8 batches (the datasets' storage type) are
    converted first. ``n_ops`` is the number of RandAugment ops of the strong view and
    ``magnitude`` their magnitude policy (:func:`ptl_cli.data.randaugment.rand_augment`).
    """
    if images01.dtype == torch.uint8:
        images01 = images01.float().div_(255.0)
    elif not images01.is_floating_point():
        raise TypeError(f"make_views expects float images in [0, 1] or uint8, got {images01.dtype}")
    names = tuple(names)
    views: dict[str, torch.Tensor] = {}
    for name, key in zip(names, view_keys(names), strict=True):
        if name == "none":
            augmented = images01
        elif name == "weak":
            augmented = weak_view(images01, generator)
        elif name == "strong":
            augmented = strong(weak_view(images01, generator), n_ops, generator, magnitude)
        else:
            raise ValueError(f"unknown view {name!r}; known views: {', '.join(VIEW_NAMES)}")
        views[key] = normalize(augmented, mean, std)
    return views
