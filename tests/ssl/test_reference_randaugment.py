"""ptl's batched RandAugment and Cutout against USB's own PIL ops (semilearn 0.3.2).

The reference is the installed ``semilearn/datasets/augmentation/randaugment.py``, loaded as a
single module (its package ``__init__`` needs the whole USB stack). Every op of the pool runs
on real images at magnitudes on both sides of the middle (the signed ops' two directions):
a 32×32 RGB image made of three different Fashion-MNIST garments (one per channel, resized
bilinearly), and the 28×28 grey originals, plus non-square crops for the resampling ops.
ptl's magnitude ``m`` in [0, 1) is the reference's ``lo + (hi - lo) * m`` over the op's range
from the reference's own ``augment_list()``.

Tolerance, in 8-bit grey levels: 0 for the look-up and resampling ops (identity, equalize,
posterize, solarize, rotate, shears, translations); at most 1 for the four blend ops and
autocontrast, where PIL rounds intermediate results to 8 bits and ptl keeps floats.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ptl_cli import plugins
from ptl_cli.data import randaugment as ra

#: USB's op functions by ptl's op names.
USB_NAMES = {
    "identity": "Identity",
    "autocontrast": "AutoContrast",
    "equalize": "Equalize",
    "rotate": "Rotate",
    "solarize": "Solarize",
    "color": "Color",
    "posterize": "Posterize",
    "contrast": "Contrast",
    "brightness": "Brightness",
    "sharpness": "Sharpness",
    "shear_x": "ShearX",
    "shear_y": "ShearY",
    "translate_x": "TranslateX",
    "translate_y": "TranslateY",
}
EXACT = {
    "identity",
    "equalize",
    "posterize",
    "solarize",
    "rotate",
    "shear_x",
    "shear_y",
    "translate_x",
    "translate_y",
}
NO_MAGNITUDE = {"identity", "autocontrast", "equalize"}
#: Magnitudes in [0, 1): below 0.5 the signed ops (rotate, shears, translations) go one way,
#: above it the other.
MAGNITUDES = (0.0, 0.07, 0.2, 0.35, 0.48, 0.52, 0.66, 0.8, 0.93, 0.999)


@pytest.fixture(scope="module")
def usb(reference):
    return reference.load_file("semilearn", "datasets/augmentation/randaugment.py")


@pytest.fixture(scope="module")
def ranges(usb) -> dict[str, tuple[object, float, float]]:
    """ptl op name -> (USB function, low, high) from USB's ``augment_list()``."""
    by_usb_name = {fn.__name__: (fn, float(lo), float(hi)) for fn, lo, hi in usb.augment_list()}
    return {name: by_usb_name[usb_name] for name, usb_name in USB_NAMES.items()}


@pytest.fixture(scope="module")
def pack_images() -> torch.Tensor:
    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    return dataset.images[torch.arange(0, 12 * 101, 101)]


@pytest.fixture(scope="module")
def grey28(pack_images) -> torch.Tensor:
    """Four real 28×28 grey images, uint8 levels as floats in [0, 1]."""
    return pack_images[:4].float() / 255.0


@pytest.fixture(scope="module")
def rgb32(pack_images) -> torch.Tensor:
    """Four real-content 32×32 RGB images: three garments per image as R, G, B, quantized to 8 bits."""
    channels = pack_images[:12, 0].float().view(4, 3, 28, 28) / 255.0
    resized = F.interpolate(channels, size=(32, 32), mode="bilinear", align_corners=False)
    return (resized * 255).round().clamp(0, 255) / 255.0


def _pil(image: torch.Tensor) -> Image.Image:
    levels = (image * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return Image.fromarray(levels[..., 0] if levels.shape[2] == 1 else levels)


def _levels(image: Image.Image) -> torch.Tensor:
    array = np.array(image, dtype=np.float32)
    return torch.from_numpy(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def _both(
    images: torch.Tensor, name: str, ranges, magnitudes=MAGNITUDES
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ptl, USB) outputs in grey levels for every image × magnitude, ptl in one batched call."""
    fn, lo, hi = ranges[name]
    x = images.repeat_interleave(len(magnitudes), 0)
    m = torch.tensor(magnitudes).repeat(len(images))
    op = torch.full((len(x),), ra.OPS.index(name), dtype=torch.long)
    ours = (ra.apply_round(x, op, m) * 255).round()
    theirs = torch.stack([_levels(fn(_pil(x[i]), lo + (hi - lo) * float(m[i]))) for i in range(len(x))])
    return ours, theirs


def test_the_pool_is_usbs(usb):
    assert sorted(USB_NAMES) == sorted(ra.OPS)
    assert sorted(fn.__name__ for fn, _, _ in usb.augment_list()) == sorted(USB_NAMES.values())


@pytest.mark.parametrize("name", ra.OPS)
@pytest.mark.parametrize("kind", ["rgb32", "grey28"])
def test_each_op_equals_usbs_pil_op(name, kind, ranges, request):
    images = request.getfixturevalue(kind)
    ours, theirs = _both(images, name, ranges)
    diff = (ours - theirs).abs()
    if name in EXACT:
        assert diff.max() == 0, f"{name} on {kind}: mean |ptl - USB| = {diff.mean():.3f} levels"
    else:
        assert diff.max() <= 1, f"{name} on {kind}: max |ptl - USB| = {diff.max():.0f} levels"
        assert diff.mean() < 0.6, f"{name} on {kind}: mean |ptl - USB| = {diff.mean():.3f} levels"


@pytest.mark.parametrize("name", ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"])
@pytest.mark.parametrize("crop", [(slice(None), slice(4, 28)), (slice(6, 26), slice(None))])
def test_resampling_ops_equal_usb_on_non_square_images(name, crop, rgb32, ranges):
    images = rgb32[:2, :, crop[0], crop[1]].contiguous()  # 32×24 and 20×32
    ours, theirs = _both(images, name, ranges)
    assert torch.equal(ours, theirs), (
        f"{name} on {tuple(images.shape[-2:])}: {(ours - theirs).abs().mean():.3f}"
    )


@pytest.mark.parametrize("name", sorted(set(ra.OPS) - NO_MAGNITUDE))
def test_the_magnitude_matters(name, rgb32, ranges):
    """The comparison can fail: at another magnitude, USB's output is far from ptl's."""
    ours, _ = _both(rgb32, name, ranges, magnitudes=(0.1,))
    _, theirs = _both(rgb32, name, ranges, magnitudes=(0.9,))
    assert (ours - theirs).abs().mean() > 2.0


# Cutout: USB's ``Cutout(img, v)`` draws the centre with numpy's global RNG; the same uniforms,
# drawn from the same seed, are handed to ptl's ``cutout_at``, so every box must be the same.
SIDE_FRACTIONS = (0.0, 0.01, 0.06, 0.13, 0.25, 0.31, 0.44, 0.499)


def _usb_cutout(usb, images: torch.Tensor, fractions, seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """(USB's outputs in grey levels, the draws ``(3, B)`` that give ptl the same boxes)."""
    outs, draws = [], []
    for image, fraction, seed in zip(images, fractions, seeds, strict=True):
        np.random.seed(seed)
        u_column, u_row = np.random.random_sample(2)  # what np.random.uniform(w), (h) consume
        np.random.seed(seed)
        outs.append(_levels(usb.Cutout(_pil(image), fraction)))
        draws.append((fraction / 0.5, u_column, u_row))
    return torch.stack(outs), torch.tensor(draws, dtype=torch.float64).T


@pytest.mark.parametrize("size", [(32, 32), (24, 32), (32, 20)])
def test_cutout_boxes_and_colour_equal_usbs(usb, rgb32, size):
    images = rgb32[..., : size[0], : size[1]].repeat(len(SIDE_FRACTIONS) * 3, 1, 1, 1)
    fractions = [f for f in SIDE_FRACTIONS for _ in range(12)]
    theirs, draws = _usb_cutout(usb, images, fractions, seeds=range(len(images)))
    ours = (ra.cutout_at(images, draws) * 255).round()
    assert torch.equal(ours, theirs), f"{(ours != theirs).any(1).sum()} pixels differ"
    changed = (ours != (images * 255).round()).any(1).sum(dim=(1, 2))
    assert (changed[:12] == 0).all() and (changed[12:] > 0).all()  # v = 0: untouched, as USB


def test_cutout_another_draw_moves_the_box(usb, rgb32):
    theirs, draws = _usb_cutout(usb, rgb32, [0.3] * 4, seeds=range(4))
    moved = draws.clone()
    moved[1] = (moved[1] + 0.5) % 1
    assert not torch.equal((ra.cutout_at(rgb32, moved) * 255).round(), theirs)
    bigger = draws.clone()
    bigger[0] = 0.9
    assert not torch.equal((ra.cutout_at(rgb32, bigger) * 255).round(), theirs)


def test_cutout_of_a_grey_image_fills_the_luminance_of_usbs_colour(usb, grey28):
    """A documented difference: USB's Cutout only takes RGB images (its colour is an RGB triple,
    PIL refuses it on a grey image); ptl fills grey images with that colour's ITU-R 601 luma."""
    with pytest.raises(TypeError):
        usb.Cutout(_pil(grey28[0]), 0.3)
    blank = torch.zeros(8, 1, 28, 28)
    out = ra.cutout(blank, generator=torch.Generator().manual_seed(0))
    luma = sum(k * v for k, v in zip((0.299, 0.587, 0.114), ra.CUTOUT_RGB, strict=True)) / 255
    values = out.unique()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(luma, abs=1e-6)


def test_cutout_draws_sides_and_places_as_usb_does(usb):
    """``cutout`` with its own RNG against USB's ``RandAugment`` draw (``random.random() * 0.5``,
    then numpy's centre): mean side, left and top edges agree within 4 standard errors."""
    import random

    n = 3000
    blank = torch.zeros(n, 3, 32, 32)
    ours = ra.cutout(blank, generator=torch.Generator().manual_seed(1)).bool().any(1)
    random.seed(1)
    np.random.seed(1)
    empty = Image.new("RGB", (32, 32))
    theirs = torch.stack([_levels(usb.Cutout(empty, random.random() * 0.5))[0] > 0 for _ in range(n)])

    def edges(filled: torch.Tensor) -> torch.Tensor:
        rows, cols = filled.any(2), filled.any(1)
        first = (
            torch.where(cols, torch.arange(32), 99).amin(1),
            torch.where(rows, torch.arange(32), 99).amin(1),
        )
        return torch.stack([cols.sum(1), rows.sum(1), *first], 1).double()  # width, height, left, top

    a, b = edges(ours), edges(theirs)
    error = ((a.var(0) + b.var(0)) / n).sqrt()
    assert ((a.mean(0) - b.mean(0)).abs() < 4 * error).all(), (a.mean(0), b.mean(0))


# The whole strong augmentation: USB's ``RandAugment(3, 5)`` (its CIFAR/SVHN/STL strong transform)
# draws 3 ops with ``random.choices``, then a magnitude per op, then Cutout's side, from Python's
# RNG (the box's centre from numpy's). The same uniforms, replayed, drive ptl's three rounds.
def _usb_rand_augment(usb, ranges, images: torch.Tensor, n: int, seed: int):
    """(USB's ``RandAugment(n, 5)`` outputs in grey levels, ptl's from the same draws, each
    image's op names)."""
    import random

    pool = [fn.__name__ for fn, _, _ in usb.augment_list()]
    by_usb = {usb_name: name for name, usb_name in USB_NAMES.items()}
    theirs, ours, names = [], [], []
    for i, image in enumerate(images):
        random.seed(seed + i)
        np.random.seed(seed + i)
        theirs.append(_levels(usb.RandAugment(n, 5)(_pil(image))))
        random.seed(seed + i)
        np.random.seed(seed + i)
        picks = [by_usb[pool[int(random.random() * len(pool))]] for _ in range(n)]
        magnitudes = [random.random() for _ in range(n)]
        side = random.random()  # USB's Cutout fraction is this · 0.5, ptl's draw[0] · 0.5
        column, row = np.random.random_sample(2)
        x = image[None]
        for name, m in zip(picks, magnitudes, strict=True):
            x = ra.apply_round(x, torch.tensor([ra.OPS.index(name)]), torch.tensor([m]))
        x = ra.cutout_at(x, torch.tensor([[side], [column], [row]], dtype=torch.float64))
        ours.append((x[0] * 255).round())
        names.append(picks)
    return torch.stack(theirs), torch.stack(ours), names


def test_three_ops_and_cutout_equal_usbs_strong_transform(usb, ranges, rgb32):
    """ptl's ``strong_ops = 3`` is USB's CIFAR strong transform: replaying USB's draws, images
    whose three ops are all exact ones come out identical (4 of 24 here); the rest differ by
    0.40 levels on average (a 1-level rounding difference of a blend op can cross a later
    posterize, solarize or equalize step, so single pixels differ more); and the op count
    matters (two ops from the same seed give other images)."""
    images = rgb32.repeat(6, 1, 1, 1)
    theirs, ours, names = _usb_rand_augment(usb, ranges, images, 3, seed=100)
    exact = torch.tensor([all(n in EXACT for n in picks) for picks in names])
    assert exact.sum() >= 2, "the seed should give some all-exact images"
    assert torch.equal(ours[exact], theirs[exact])
    diff = (ours - theirs).abs()
    assert diff.mean() < 0.5, diff.mean()
    two, _, _ = _usb_rand_augment(usb, ranges, images, 2, seed=100)
    assert (two - theirs).abs().mean() > 10 * diff.mean() + 1
