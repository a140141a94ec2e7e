"""FixMatch's strong augmentation, batched on the device, against a per-image reference.

The batched RandAugment + Cutout (``ptl_cli.data.randaugment``) computes every op for the whole batch
and picks one per image, on whatever device the batch is. What is checked here, on CPU:

* per image, the batched op equals a per-image PIL formulation of the same op at the same
  magnitude (the reference FixMatch code is written with PIL), over real images;
* each image's output depends on that image only (no batch statistic leaks between images);
* the per-sample randomness: ops chosen uniformly and independently per image, magnitudes
  uniform, Cutout sizes and centres as documented; different images get different ops;
* value ranges: outputs stay in [0, 1], finite, same dtype and shape.

On a CUDA machine, ``test_cuda_matches_cpu`` also runs the same draws on the GPU and compares
with the CPU output; without one (as in CI here) it is skipped: the device path is then only
checked through the device-agnostic code, not on the device itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from ptl_cli import plugins
from ptl_cli.data import randaugment as ra


def _chi2_pvalue(statistic: float, dof: int) -> float:
    """P(chi-square with ``dof`` degrees of freedom >= statistic): the regularized upper gamma."""
    return float(
        torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2))
    )


def _ks_pvalue(distance: float, n: float) -> float:
    """Asymptotic Kolmogorov p-value of a KS distance over ``n`` (effective) samples."""
    k = torch.arange(1, 101, dtype=torch.float64)
    terms = 2 * (-1) ** (k - 1) * torch.exp(-2 * k**2 * n * distance**2)
    return float(terms.sum().clamp(0, 1))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """256 real Fashion-MNIST images (1×28×28) in [0, 1]."""
    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    return pack.images[torch.arange(0, 256 * 17, 17)].float() / 255.0


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image[0] * 255).round().clamp(0, 255).byte().numpy(), mode="L")


def _tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)[None]


def _reference(name: str, image: Image.Image, m: float) -> Image.Image:
    """One op on one image with PIL, magnitude ``m`` in [0, 1) mapped as ptl documents it.

    Shears are PIL's (about the top-left corner), as in USB; solarize inverts levels >= 256·m.
    """
    signed, factor = 2 * m - 1, 0.05 + 0.9 * m
    w, h = image.size
    nearest = {"resample": Image.NEAREST, "fillcolor": 0}

    def affine(*coefficients: float) -> Image.Image:
        return image.transform(image.size, Image.AFFINE, coefficients, **nearest)

    ops = {
        "identity": lambda: image,
        "autocontrast": lambda: ImageOps.autocontrast(image),
        "equalize": lambda: ImageOps.equalize(image),
        "rotate": lambda: image.rotate(30 * signed, **nearest),
        "solarize": lambda: ImageOps.solarize(image, threshold=256 * m),
        "color": lambda: ImageEnhance.Color(image).enhance(factor),
        "posterize": lambda: ImageOps.posterize(image, 4 + min(3, int(4 * m))),
        "contrast": lambda: ImageEnhance.Contrast(image).enhance(factor),
        "brightness": lambda: ImageEnhance.Brightness(image).enhance(factor),
        "sharpness": lambda: ImageEnhance.Sharpness(image).enhance(factor),
        "shear_x": lambda: affine(1, 0.3 * signed, 0, 0, 1, 0),
        "shear_y": lambda: affine(1, 0, 0, 0.3 * signed, 1, 0),
        "translate_x": lambda: affine(1, 0, 0.3 * signed * w, 0, 1, 0),
        "translate_y": lambda: affine(1, 0, 0, 0, 1, 0.3 * signed * h),
    }
    return ops[name]()


@pytest.mark.parametrize("name", ra.OPS)
def test_each_op_matches_the_per_image_reference(images, name):
    x = images[:64]
    out = ra.rand_augment(x, n_ops=1, ops=(name,), generator=torch.Generator().manual_seed(1))
    # rand_augment draws (2, B) per round: row 0 picks the op, row 1 is the magnitude
    magnitude = torch.rand((2, x.shape[0]), generator=torch.Generator().manual_seed(1))[1]
    ref = torch.stack([_tensor(_reference(name, _pil(x[i]), float(magnitude[i]))) for i in range(len(x))])
    diff = (out - ref).abs()
    # PIL works on 8-bit levels, ptl on floats: allow rounding (and one level at blend ops' edges)
    assert diff.mean() < 3e-3, f"{name}: mean |batched - PIL| = {diff.mean():.4f}"
    assert (diff > 2.5 / 255).float().mean() < 2e-3, f"{name}: too many pixels differ by > 2 levels"


def test_each_image_depends_only_on_itself(images):
    """Swap every other image of the batch: with the same draws, the kept images' outputs stay."""
    a = images[:64]
    b = a.clone()
    b[1::2] = images[64:128:2]
    out_a = ra.strong(a, n_ops=2, generator=torch.Generator().manual_seed(3))
    out_b = ra.strong(b, n_ops=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out_a[0::2], out_b[0::2])
    assert not torch.equal(out_a[1::2], out_b[1::2])


def test_ops_are_uniform_and_independent_per_image():
    """The op draw of each image and round: uniform over the 14 ops (chi-square), rounds independent."""
    n, gen = 14 * 400, torch.Generator().manual_seed(0)
    draws = [torch.rand((2, n), generator=gen) for _ in range(2)]  # what rand_augment draws per round
    choice = [(d[0] * len(ra.OPS)).long().clamp(max=len(ra.OPS) - 1) for d in draws]
    k = len(ra.OPS)
    counts = torch.bincount(choice[0], minlength=k).double()
    expected = n / k
    assert _chi2_pvalue(float(((counts - expected) ** 2 / expected).sum()), k - 1) > 1e-3
    table = torch.zeros(k, k, dtype=torch.float64)
    table.index_put_((choice[0], choice[1]), torch.ones(n, dtype=torch.float64), accumulate=True)
    independent = table.sum(1, keepdim=True) * table.sum(0, keepdim=True) / n
    statistic = float(((table - independent) ** 2 / independent).sum())
    assert _chi2_pvalue(statistic, (k - 1) ** 2) > 1e-3
    magnitudes = draws[0][1].double().sort().values
    steps = torch.arange(n + 1, dtype=torch.float64) / n
    distance = torch.maximum(steps[1:] - magnitudes, magnitudes - steps[:-1]).max()
    assert _ks_pvalue(float(distance), n) > 1e-3


def test_identical_images_get_different_augmentations(images):
    """512 copies of one image: ops and magnitudes differ per copy, so nearly all outputs differ."""
    x = images[5:6].expand(512, -1, -1, -1).contiguous()
    torch.manual_seed(0)
    out = ra.strong(x, n_ops=2)
    distinct = torch.unique(out.flatten(1), dim=0).shape[0]
    assert distinct > 480


def test_value_ranges_and_types(images):
    torch.manual_seed(1)
    for n_ops in (1, 3):
        out = ra.strong(images[:128], n_ops=n_ops)
        assert out.shape == (128, *images.shape[1:]) and out.dtype == images.dtype
        assert torch.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0
    rgb = images[:32].expand(-1, 3, -1, -1).contiguous()
    out = ra.strong(rgb)
    assert out.shape == rgb.shape and out.min() >= 0.0 and out.max() <= 1.0


def test_cutout_sizes_and_centres(images):
    """Cutout fills one box per image with the grey of USB's colour, placed as USB does: side
    ``v = U[0, 0.5)·28``, ``floor(v) + 1`` pixels; shifted, not clipped, at the top and left
    borders; centre uniform on (1, 28]. Box by box against USB: tests/ssl/test_reference_randaugment.py."""
    blank = torch.zeros(4000, 1, 28, 28)
    out = ra.cutout(blank, generator=torch.Generator().manual_seed(2))
    filled = out > 0
    assert torch.allclose(out[filled], out[filled][0]) and 0.45 < out[filled][0] < 0.5  # one grey
    rows = filled.any(dim=3).sum(dim=(1, 2))
    cols = filled.any(dim=2).sum(dim=(1, 2))
    area = filled.sum(dim=(1, 2, 3))
    assert torch.equal(area, rows * cols)  # one axis-aligned rectangle per image
    assert rows.min() >= 1 and rows.max() <= 14  # a positive side fills at least one pixel
    unclipped = ~(filled[..., -1, :].any(-1) | filled[..., -1].any(-1)).flatten()
    assert unclipped.sum() > 2000
    assert torch.equal(rows[unclipped], cols[unclipped])  # squares, even against the top/left border
    sides = torch.bincount(rows[unclipped], minlength=15)[1:]
    assert (sides > 50).all()  # every side 1..14 occurs
    top_left = filled[:, 0, 0, 0]
    assert torch.equal(rows[top_left], cols[top_left]) and top_left.sum() > 20  # shifted into the corner
    touches = filled[:, 0].any(2)[:, [0, -1]].float().mean(0), filled[:, 0].any(1)[:, [0, -1]].float().mean(0)
    assert all(0.05 < p < 0.5 for pair in touches for p in pair)  # boxes reach every border


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_matches_cpu(images):
    """Same draws (a CPU generator) on the GPU: the device path gives the CPU path's images.

    Nearest-neighbour resampling can land on the other neighbour when a sample point is within
    float error of a pixel edge, so a few pixels may differ; everything else agrees to float
    precision. With the device RNG instead, the distributions of per-op outputs must agree.
    """
    x = images
    cpu = ra.strong(x, n_ops=2, generator=torch.Generator().manual_seed(4))
    gpu = ra.strong(x.cuda(), n_ops=2, generator=torch.Generator().manual_seed(4)).cpu()
    close = (cpu - gpu).abs() < 1e-4
    assert close.float().mean() > 0.999
    torch.cuda.manual_seed(0)
    device_rng = ra.strong(x.cuda().repeat(8, 1, 1, 1), n_ops=2).cpu()
    torch.manual_seed(0)
    host_rng = ra.strong(x.repeat(8, 1, 1, 1), n_ops=2)
    a, b = device_rng.mean(dim=(1, 2, 3)).double(), host_rng.mean(dim=(1, 2, 3)).double()
    points = torch.cat([a, b])
    cdf_a = (a.view(-1, 1) <= points).double().mean(0)
    cdf_b = (b.view(-1, 1) <= points).double().mean(0)
    distance = float((cdf_a - cdf_b).abs().max())
    assert _ks_pvalue(distance, len(a) * len(b) / (len(a) + len(b))) > 1e-3
