"""Batched RandAugment + Cutout: FixMatch's strong augmentation, run on the images' device.

Each image gets ``n_ops`` operations drawn uniformly from the 14 of FixMatch's pool, each with
its own magnitude drawn uniformly from the op's range (the FixMatch paper's ranges, as USB uses
them), then a Cutout square of random side up to half the image's width filled with USB's
grey (125, 123, 114), placed as USB places it (:func:`cutout_at`).

Why every op is computed for the whole batch and picked per image with ``torch.where``: grouping
images by op needs their indices on the host (a device sync per op), while the ops are cheap
next to a forward pass. The affine ops (rotate, shear, translate) share one ``grid_sample`` and
the four blend ops (brightness, color, contrast, sharpness) one interpolation, so a round costs
about ten elementwise passes, one 3×3 box filter, one histogram and one resampling.

Each op equals USB's PIL op (semilearn's ``randaugment.py``) at the same magnitude: affine ops
resample with nearest neighbour, fill uncovered pixels with 0 and, like PIL, shear about the
top-left corner (rotations are about the centre); solarize inverts levels at or above 256·m.
The blend ops and autocontrast keep floats where PIL rounds to 8 bits (within one grey level);
``tests/ssl/test_reference_randaugment.py`` checks every op against the installed reference.

Two knobs (recipe keys ``ssl.strong_ops`` and ``ssl.strong_magnitude`` in ``ptl transfer``):
the number of ops per image (ptl's default 2, FixMatch's paper; USB's CIFAR/SVHN/STL datasets
use 3) and the magnitude policy: ``"random"`` (FixMatch's and USB's: each op's magnitude drawn
uniformly from its whole range, per image and op) or a fixed strength ``m`` in [0, 1]
(RandAugment's original policy: every op at strength ``m``, 0 = the identity end of its range,
1 = the far end, the signed ops in a random direction; see :func:`fixed_magnitude`).

Images are float ``(B, C, H, W)`` in ``[0, 1]`` with 1 or 3 channels. Randomness comes from
torch's RNG on the images' device, or from ``generator``: seeded, the output is reproducible.
Draws go through :func:`ptl_cli.data.augment.uniform` (batch = last dimension), so under data
parallelism each rank augments its share of the global batch exactly as one process would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ptl_cli.data.augment import uniform

#: The operation pool, in a fixed order (op ids index this tuple).
OPS: tuple[str, ...] = (
    "identity",
    "autocontrast",
    "equalize",
    "rotate",
    "solarize",
    "color",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
)

_BLEND = ("brightness", "color", "contrast", "sharpness")
_AFFINE = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_ENHANCE_RANGE = (0.05, 0.95)  # blend factor: 0 = degenerate image, 1 = original
_ROTATE_DEGREES = 30.0
_SHEAR = 0.3
_TRANSLATE = 0.3  # fraction of the image side
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's RGB -> L conversion


def _check(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
        raise ValueError(
            "RandAugment expects float images (B, C, H, W) in [0, 1] with 1 or 3 channels, got "
            f"{images.dtype} {tuple(images.shape)}"
        )


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luminance ``(B, 1, H, W)``; a 1-channel image is its own luminance.

    Weighted with Python scalars: a weight tensor built from a list would be a host-to-device
    copy, and a blocking one, on every call.
    """
    if x.shape[1] == 1:
        return x
    r, g, b = _LUMA
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3×3 ones with centre 5, over 13) with the border left unfiltered.

    Written as a 3×3 box sum plus 4× the centre: average pooling is much faster than a
    depthwise convolution on CPU.
    """
    h, w = x.shape[-2:]
    box = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True) * 9.0
    blurred = (box + 4.0 * x) / 13.0
    border = torch.ones(1, 1, h, w, device=x.device, dtype=torch.bool)
    border[..., 1:-1, 1:-1] = False
    return torch.where(border, x, blurred)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to span [0, 1]; flat channels are left alone."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    stretched = (x - lo) / span.clamp_min(1e-6)
    return torch.where(span > 1e-6, stretched, x)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-channel histogram equalization on 256 levels, with PIL's look-up-table rule."""
    b, c, h, w = x.shape
    levels = (x * 255.0).round_().clamp_(0, 255).long().view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    top = hist.gather(1, levels.amax(dim=1, keepdim=True))  # count in the highest used level
    step = (h * w - top) // 255
    before = hist.cumsum(1) - hist  # pixels strictly below each level
    lut = ((before + step // 2) // step.clamp_min(1)).clamp_(max=255)
    equalized = lut.gather(1, levels).to(x.dtype).div_(255.0)
    return torch.where(step > 0, equalized, x.reshape(b * c, h * w)).view(b, c, h, w)


def apply_round(x: torch.Tensor, op: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
    """Apply op ``op[i]`` (an index into :data:`OPS`) with magnitude ``mag[i]`` in [0, 1) to image
    ``i``, for every image: one round of :func:`rand_augment` once its draws are made (public so
    that tests can choose the magnitudes)."""
    b, c, h, w = x.shape

    def picks(*names: str) -> torch.Tensor:
        hit = torch.zeros_like(op, dtype=torch.bool)
        for name in names:
            hit |= op == OPS.index(name)
        return hit

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.view(b, 1, 1, 1)

    # Blends towards a degenerate image: out = deg + f * (x - deg); deg = x elsewhere, so x stays.
    gray = _grayscale(x)
    degenerate = torch.where(per_image(picks("sharpness")), _smooth(x), x)
    degenerate = torch.where(per_image(picks("contrast")), gray.mean(dim=(2, 3), keepdim=True), degenerate)
    degenerate = torch.where(per_image(picks("color")), gray, degenerate)
    degenerate = torch.where(per_image(picks("brightness")), torch.zeros_like(x), degenerate)
    low, high = _ENHANCE_RANGE
    factor = torch.where(picks(*_BLEND), low + (high - low) * mag, torch.ones_like(mag))
    out = (degenerate + per_image(factor) * (x - degenerate)).clamp_(0.0, 1.0)

    out = torch.where(per_image(picks("autocontrast")), _autocontrast(x), out)
    out = torch.where(per_image(picks("equalize")), _equalize(x), out)
    # invert levels at or above the threshold 256 * mag, PIL's rule for the reference's U[0, 256)
    solarized = torch.where(x * 255.0 < per_image(256.0 * mag), x, 1.0 - x)
    out = torch.where(per_image(picks("solarize")), solarized, out)
    bits = 4 + (mag * 4).floor().clamp_(max=3)  # 4..7 bits kept, as int(U[4, 8)) in the reference
    bucket = per_image(torch.pow(2.0, 8 - bits))
    posterized = torch.div((x * 255.0).round(), bucket, rounding_mode="floor").mul_(bucket).div_(255.0)
    out = torch.where(per_image(picks("posterize")), posterized, out)

    # Affine ops: one inverse map per image in normalized coordinates, identity elsewhere.
    # Aspect factors keep rotations and shears rigid in pixel space on non-square images.
    signed = 2.0 * mag - 1.0
    angle = signed * math.radians(_ROTATE_DEGREES)
    rotate, shear_x, shear_y = picks("rotate"), picks("shear_x"), picks("shear_y")
    one, zero = torch.ones_like(mag), torch.zeros_like(mag)
    cos, sin = torch.cos(angle), torch.sin(angle)
    t00 = torch.where(rotate, cos, one)
    t01 = torch.where(rotate, -sin, torch.where(shear_x, _SHEAR * signed, zero)) * (h / w)
    t10 = torch.where(rotate, sin, torch.where(shear_y, _SHEAR * signed, zero)) * (w / h)
    t11 = torch.where(rotate, cos, one)
    # Shears are about the top-left corner, as PIL's: x_in = x_out + s * y_out in pixels, which in
    # normalized coordinates adds the shift s * (h / w) (the shear of the centre row).
    t02 = torch.where(picks("translate_x"), 2.0 * _TRANSLATE * signed, torch.where(shear_x, t01, zero))
    t12 = torch.where(picks("translate_y"), 2.0 * _TRANSLATE * signed, torch.where(shear_y, t10, zero))
    theta = torch.stack([t00, t01, t02, t10, t11, t12], dim=1).view(b, 2, 3)
    grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)
    warped = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return torch.where(per_image(picks(*_AFFINE)), warped, out)


#: The magnitude policies: ``"random"`` or a fixed strength, a number in [0, 1].
Magnitude = str | float

#: Ops whose range is signed (a direction): strength ``m`` is ``±m`` of the range's half.
_SIGNED = _AFFINE


def check_policy(n_ops: int, magnitude: Magnitude) -> None:
    """Refuse an op count below 0 or a magnitude policy that is neither ``"random"`` nor in [0, 1]."""
    if isinstance(n_ops, bool) or not isinstance(n_ops, int) or n_ops < 0:
        raise ValueError(f"the RandAugment op count is a whole number, 0 or more, not {n_ops!r}")
    if magnitude == "random":
        return
    if isinstance(magnitude, bool) or not isinstance(magnitude, int | float) or not 0 <= magnitude <= 1:
        raise ValueError(
            f"the RandAugment magnitude is 'random' or a strength between 0 and 1, not {magnitude!r}"
        )


def fixed_magnitude(op: torch.Tensor, strength: float, direction: torch.Tensor) -> torch.Tensor:
    """The magnitudes (positions in each op's range, as :func:`apply_round` takes them) of ``op`` at
    a fixed ``strength``; ``direction`` in [0, 1) picks the side of the signed ops (below 1/2: negative).

    Strength 0 is each op's mildest setting and 1 its strongest: for the signed ops (rotate, shears,
    translations) the position ``1/2 ± strength/2`` (±30° at 1); for the others ``1 - strength``,
    because their ranges run from strong to mild (blend factor 0.05 → 0.95, 4 → 7 posterize bits,
    solarize threshold 0 → 256). Ops without a magnitude ignore it.
    """
    signed = torch.zeros_like(op, dtype=torch.bool)
    for name in _SIGNED:
        signed |= op == OPS.index(name)
    sign = torch.where(direction < 0.5, -1.0, 1.0)
    mild_high = torch.full_like(direction, min(1.0 - strength, 1.0 - 1e-6))
    return torch.where(signed, 0.5 + sign * (0.5 * strength), mild_high).clamp_(0.0, 1.0 - 1e-6)


def rand_augment(
    images: torch.Tensor,
    n_ops: int = 2,
    generator: torch.Generator | None = None,
    ops: Sequence[str] | None = None,
    magnitude: Magnitude = "random",
) -> torch.Tensor:
    """``n_ops`` rounds; in each, every image gets one op from ``ops`` (default: all of
    :data:`OPS`) chosen uniformly, with a magnitude drawn uniformly from that op's range
    (``magnitude="random"``) or at a fixed strength (a number in [0, 1], :func:`fixed_magnitude`).

    The random policy draws two uniforms per image and round (op, magnitude); the fixed one draws
    the same two and uses the second for the signed ops' direction, so a given seed picks the same
    ops under both policies.
    """
    _check(images)
    check_policy(n_ops, magnitude)
    names = tuple(OPS if ops is None else ops)
    unknown = [n for n in names if n not in OPS]
    if unknown or not names:
        raise ValueError(f"unknown RandAugment ops {unknown or '(none given)'}; choose from {', '.join(OPS)}")
    x = images.float()
    for _ in range(n_ops):
        draw = uniform((2, x.shape[0]), x, generator)
        choice = (draw[0] * len(names)).long().clamp_(max=len(names) - 1)
        op = _op_ids(choice, names)
        mag = draw[1] if magnitude == "random" else fixed_magnitude(op, float(magnitude), draw[1])
        x = apply_round(x, op, mag)
    return x.to(images.dtype)


def _op_ids(choice: torch.Tensor, names: tuple[str, ...]) -> torch.Tensor:
    """Map positions in ``names`` to ids in :data:`OPS` on the device, without copying a table."""
    if names == OPS:
        return choice
    ids = torch.zeros_like(choice)
    for position, name in enumerate(names):
        ids = torch.where(choice == position, OPS.index(name), ids)
    return ids


#: USB's Cutout colour, 8-bit RGB (its ``CutoutAbs``); grey images get its ITU-R 601 luminance.
CUTOUT_RGB: tuple[int, int, int] = (125, 123, 114)


def cutout(
    images: torch.Tensor,
    max_fraction: float = 0.5,
    fill: float | Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """USB's Cutout, independently per image: a square of side ``U[0, max_fraction) × W`` filled
    with ``fill`` (default :data:`CUTOUT_RGB` / 255; see :func:`cutout_at` for the placement)."""
    draw = uniform((3, images.shape[0]), images, generator)
    return cutout_at(images, draw, max_fraction, fill)


def cutout_at(
    images: torch.Tensor,
    draw: torch.Tensor,
    max_fraction: float = 0.5,
    fill: float | Sequence[float] | None = None,
) -> torch.Tensor:
    """Cutout from given draws ``(3, B)`` in [0, 1): side fraction, column and row of the centre.

    The placement is USB's (``Cutout``/``CutoutAbs``), so that FixMatch here is FixMatch there:
    side ``v = draw[0] · max_fraction · W`` (the *width*, for both sides); centre
    ``W - (W - 1) · draw[1]``, i.e. uniform on (1, W] — what its ``np.random.uniform(w)`` (low = w,
    high = 1) draws — and likewise for rows; the top-left corner ``floor(max(0, centre - v / 2))``
    and the last pixel ``floor(min(W, corner + v))``, both included as PIL's rectangle does, so
    a square pushed past the top or left border is shifted, past the others clipped, and a
    positive side always fills at least one pixel. Box arithmetic runs in ``draw``'s dtype.
    """
    b, c, h, w = images.shape
    side = draw[0] * max_fraction * w

    def span(size: int, centre_draw: torch.Tensor) -> torch.Tensor:
        centre = size - (size - 1) * centre_draw
        first = (centre - side / 2).clamp_min(0).floor()
        last = torch.minimum(first + side, torch.full_like(first, size)).floor()
        index = torch.arange(size, device=images.device, dtype=draw.dtype).view(1, size)
        return (index >= first.view(b, 1)) & (index <= last.view(b, 1)) & (side > 0).view(b, 1)

    inside = span(h, draw[2]).view(b, 1, h, 1) & span(w, draw[1]).view(b, 1, 1, w)
    if fill is None:
        rgb = [level / 255.0 for level in CUTOUT_RGB]
        fill = rgb if c == 3 else [sum(k * v for k, v in zip(_LUMA, rgb, strict=True))]
    values = [float(fill)] * c if isinstance(fill, int | float) else [float(v) for v in fill]
    if len(values) != c:
        raise ValueError(f"cutout fill has {len(values)} values for {c} channels")
    colour = torch.cat(
        [torch.full((1, 1, 1, 1), v, dtype=images.dtype, device=images.device) for v in values], 1
    )
    return torch.where(inside, colour, images)


def strong(
    images: torch.Tensor,
    n_ops: int = 2,
    generator: torch.Generator | None = None,
    magnitude: Magnitude = "random",
) -> torch.Tensor:
    """FixMatch's strong augmentation: RandAugment with ``n_ops`` random ops, then Cutout.

    The strong *view* also flips and crops first: :func:`ptl_cli.data.views.make_views` does that.
    """
    return cutout(rand_augment(images, n_ops, generator, magnitude=magnitude), generator=generator)
