"""Batched RandAugment + Cutout: per-sample randomness, range, shapes, determinism, op semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from ptl_cli.data.randaugment import CUTOUT_RGB, OPS, apply_round, cutout, rand_augment, strong


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels", [1, 3])
def test_identical_images_get_different_transforms(channels, fashion01, fashion_rgb):
    image = (fashion01 if channels == 1 else fashion_rgb)[3]
    batch = image.expand(32, -1, -1, -1).contiguous()
    out = strong(batch, generator=_seeded())
    flat = out.flatten(1)
    distinct = torch.unique(flat, dim=0).shape[0]
    assert distinct == 32  # every copy got its own ops, magnitudes and cutout


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("n_ops", [1, 2, 3])
def test_range_shape_and_dtype_are_kept(channels, n_ops, fashion01, fashion_rgb):
    images = fashion01 if channels == 1 else fashion_rgb
    out = strong(images, n_ops=n_ops, generator=_seeded(n_ops))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("op", OPS)
def test_every_op_keeps_range_and_shape_on_non_square_images(op, fashion_rgb):
    images = fashion_rgb[:16, :, :, 2:26]  # 28×24
    out = rand_augment(images, n_ops=1, ops=[op], generator=_seeded())
    assert out.shape == images.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    if op == "identity":
        assert torch.equal(out, images)
    else:
        assert not torch.equal(out, images)


def test_seeded_generator_is_deterministic(fashion_rgb):
    a = strong(fashion_rgb, generator=_seeded(7))
    b = strong(fashion_rgb, generator=_seeded(7))
    c = strong(fashion_rgb, generator=_seeded(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_is_used_without_a_generator(fashion01):
    torch.manual_seed(3)
    a = strong(fashion01)
    torch.manual_seed(3)
    assert torch.equal(a, strong(fashion01))


def test_magnitudes_are_random_per_sample(fashion01):
    batch = fashion01[5].expand(16, -1, -1, -1)
    out = rand_augment(batch, n_ops=1, ops=["brightness"], generator=_seeded())
    factors = out.flatten(1).sum(1) / batch.flatten(1).sum(1)  # brightness scales every pixel
    assert factors.min() >= 0.05 - 1e-5 and factors.max() <= 0.95 + 1e-5
    assert torch.unique(factors).numel() == 16


def test_equalize_matches_pil(fashion_rgb):
    images = (fashion_rgb[:4] * 255).round() / 255
    out = rand_augment(images, n_ops=1, ops=["equalize"])
    for image, got in zip(images, out, strict=True):
        pil = Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())
        expected = torch.from_numpy(np.array(ImageOps.equalize(pil))).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_cutout_fills_a_square_of_at_most_half_the_side_with_gray():
    images = torch.zeros(64, 3, 32, 32)
    out = cutout(images, generator=_seeded())
    colour = torch.tensor(CUTOUT_RGB).view(1, 3, 1, 1) / 255
    filled = (out == colour).all(1, keepdim=True)
    assert torch.all((out == 0).all(1, keepdim=True) | filled)
    rows, cols = filled.any(dim=3).sum(dim=(1, 2)), filled.any(dim=2).sum(dim=(1, 2))
    assert rows.max() <= 16 and cols.max() <= 16
    assert torch.equal(filled.sum(dim=(1, 2, 3)), rows * cols)  # each filled region is a rectangle
    assert torch.unique(filled.sum(dim=(1, 2, 3))).numel() > 10  # sizes and places vary per image


def test_bad_input_is_an_explicit_error(fashion01):
    with pytest.raises(ValueError, match="1 or 3 channels"):
        strong(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="unknown RandAugment ops"):
        rand_augment(fashion01, ops=["blur"])


def test_the_op_count_changes_the_images(fashion_rgb):
    """``n_ops`` is a real knob: from one seed, 0, 2 and 3 ops give different strong views, and 0
    ops leaves only the Cutout square."""
    outs = {n: strong(fashion_rgb, n_ops=n, generator=_seeded(11)) for n in (0, 2, 3)}
    assert not torch.equal(outs[2], outs[3])
    assert not torch.equal(outs[0], outs[2])
    changed = (outs[0] != fashion_rgb).any(1)  # (B, H, W): only the square differs
    assert torch.equal(changed.sum(dim=(1, 2)), changed.any(2).sum(1) * changed.any(1).sum(1))
    more = (rand_augment(fashion_rgb, 3, _seeded(2)) - fashion_rgb).abs().mean()
    fewer = (rand_augment(fashion_rgb, 1, _seeded(2)) - fashion_rgb).abs().mean()
    assert more > fewer  # more ops move the images further


def test_a_fixed_magnitude_applies_every_op_at_that_strength(fashion_rgb):
    """Strength 0 leaves every op with a magnitude at its mild end (brightness factor 0.95, no
    rotation); strength 1 at its strong end (factor 0.05, ±30°, both directions drawn); the ops
    chosen do not depend on the policy."""
    batch = fashion_rgb[5].expand(32, -1, -1, -1)
    for strength, factor in ((0.0, 0.95), (1.0, 0.05), (0.5, 0.5)):
        out = rand_augment(batch, 1, _seeded(), ops=["brightness"], magnitude=strength)
        ratios = out.flatten(1).sum(1) / batch.flatten(1).sum(1)
        torch.testing.assert_close(ratios, torch.full_like(ratios, factor), rtol=0, atol=1e-4)
    assert torch.equal(rand_augment(batch, 1, _seeded(), ops=["rotate", "shear_x"], magnitude=0.0), batch)
    rotated = rand_augment(batch, 1, _seeded(), ops=["rotate"], magnitude=1.0)
    op = torch.full((2,), OPS.index("rotate"))
    extremes = apply_round(batch[:2], op, torch.tensor([0.0, 1.0 - 1e-6]))  # -30°, +30° as USB's
    for image in rotated:
        assert torch.equal(image, extremes[0]) or torch.equal(image, extremes[1])
    assert torch.unique(rotated.flatten(1), dim=0).shape[0] == 2  # both directions drawn


def test_bad_policies_are_explicit_errors(fashion01):
    with pytest.raises(ValueError, match="op count"):
        rand_augment(fashion01, n_ops=-1)
    for bad in (1.5, -0.1, "uniform", True):
        with pytest.raises(ValueError, match="magnitude"):
            rand_augment(fashion01, magnitude=bad)
