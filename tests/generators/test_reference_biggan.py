"""ptl's BigGAN-deep against the reference, ``pytorch-pretrained-biggan`` 0.1.1, on the published
128/256/512 layer lists at a tiny width.

A reference ``BigGAN`` with random weights and realistic buffers (standing statistics measured on
the reference model itself, different in every truncation row; power-iterated spectral-norm
vectors; attention on; non-trivial gains and biases) is saved in the published layout
(``config.json`` + ``pytorch_model.bin``) and loaded through the ``biggan`` plugin strictly. With
the same ``z`` the network the plugin loaded gives the reference's images in float64 to 1e-9, for
one-hot and soft class vectors, at ψ = 0.4, 0.5 and 1.0, and the plugin's own float32 sampling is
as close to them as the reference's float32 run is; changing the class or one tensor (or one
statistics row) of the file moves the images by 1e-3 and more.

Only the reference's ``model.py`` (through ``convert_tf_to_pytorch.py``, which holds the published
configs) is executed: its package ``__init__`` also imports ``utils.py``, which needs scipy for
sampling helpers these tests do not use.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ptl_generators.biggan import BigGAN, BigGANConfig, truncated_noise
from ptl_generators.biggan_generator import build

#: float64 agreement (observed: at most 9e-13 over the 9 cases). In float32 each implementation
#: strays from the float64 images by 3e-6 to 4e-4 (rounding through 40-57 conditional norms with
#: realistic statistics; the two differ from each other by up to 5.6e-4 at 512), so a fixed 1e-5
#: float32 bound cannot hold. The plugin's float32 images must instead be within F32_FACTOR times
#: the reference's own float32 error (+ F32_FLOOR) of the exact images; observed ratio: at most 1.9.
ATOL64 = 1e-9
F32_FACTOR = 4.0
F32_FLOOR = 1e-5
Z_DIM = 8  # the reference ties z and class-embedding sizes (condition = 2·z_dim)
CLASSES = 5
WIDTH = 4  # the smallest channel width the layer lists allow (attention needs 2·width/8 ≥ 1)
ANCHORS = (0.2, 0.5, 1.0)  # truncations at which standing statistics are measured
GRID_PSI = (0.4, 0.5, 1.0)


@pytest.fixture(scope="module")
def ref(reference):
    """The reference's ``convert_tf_to_pytorch`` module: ``BigGAN``, ``BigGANConfig`` and the
    published ``BigGAN128``/``BigGAN256``/``BigGAN512`` configs."""
    return reference.load_file("pytorch_pretrained_biggan", "convert_tf_to_pytorch.py")


def _published(ref, resolution: int):
    return {128: ref.BigGAN128, 256: ref.BigGAN256, 512: ref.BigGAN512}[resolution]


@torch.no_grad()
def _power_iterate(net, steps: int = 8) -> None:
    """Move every spectral-norm ``u``/``v`` from its random start towards the top singular pair,
    as training leaves them in the published checkpoints."""
    for module in net.modules():
        if not hasattr(module, "weight_u"):
            continue
        w = module.weight_orig.flatten(1)
        u, v = module.weight_u, module.weight_v
        for _ in range(steps):
            v = F.normalize(w.t() @ u, dim=0, eps=1e-12)
            u = F.normalize(w @ v, dim=0, eps=1e-12)
        module.weight_u.copy_(u)
        module.weight_v.copy_(v)


@torch.no_grad()
def _measure_statistics(net, psi: float, batch: int, generator: torch.Generator) -> dict:
    """The batch mean/var every norm layer of the reference sees at truncation ``psi`` when every
    earlier layer is normalized with its own batch statistics (BigGAN's standing statistics).

    A pre-hook writes the batch statistics into every row just before the layer runs, so the
    reference's own forward normalizes with them whatever row ``psi`` selects.
    """
    norms = [m for m in net.modules() if type(m).__name__ == "BigGANBatchNorm"]
    seen: dict = {}

    def hook(module, args):
        x = args[0]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        module.running_means.copy_(mean.expand_as(module.running_means))
        module.running_vars.copy_(var.expand_as(module.running_vars))
        seen[module] = (mean.clone(), var.clone())

    handles = [m.register_forward_pre_hook(hook) for m in norms]
    try:
        z = psi * torch.nn.init.trunc_normal_(torch.empty(batch, Z_DIM), a=-2, b=2, generator=generator)
        y = torch.softmax(4 * torch.randn(batch, CLASSES, generator=generator), dim=1)
        net(z, y, psi)
    finally:
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def _fill_statistics(net, n_stats: int, generator: torch.Generator) -> None:
    """Every row ``i`` (ψ = i/(n-1)): the measured statistics interpolated between the anchors,
    times a per-row random factor of ±15 %, so that no two rows are alike."""
    measured = [_measure_statistics(net, psi, 4, generator) for psi in ANCHORS]
    for module in measured[0]:
        for i in range(n_stats):
            psi = i / (n_stats - 1)
            k = sum(1 for a in ANCHORS[1:-1] if psi >= a)  # anchors k and k+1 bracket psi
            w = min(max((psi - ANCHORS[k]) / (ANCHORS[k + 1] - ANCHORS[k]), 0.0), 1.0)
            (m0, v0), (m1, v1) = measured[k][module], measured[k + 1][module]
            mean, var = (1 - w) * m0 + w * m1, (1 - w) * v0 + w * v1
            jitter = torch.empty(2, mean.numel()).uniform_(0.85, 1.15, generator=generator)
            module.running_means[i] = mean * jitter[0]
            module.running_vars[i] = var * jitter[1]


def _reference_model(ref, resolution: int):
    published = _published(ref, resolution)
    config = ref.BigGANConfig(
        output_dim=resolution,
        z_dim=Z_DIM,
        class_embed_dim=Z_DIM,
        channel_width=WIDTH,
        num_classes=CLASSES,
        layers=[tuple(layer) for layer in published.layers],
        attention_layer_position=published.attention_layer_position,
        eps=published.eps,
        n_stats=published.n_stats,
    )
    torch.manual_seed(resolution)
    net = ref.BigGAN(config).eval()
    g = torch.Generator().manual_seed(resolution + 1)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("gamma"):  # attention on (it starts at 0 in training)
                p.fill_(0.6)
            elif name == "generator.bn.weight":  # left uninitialized by the reference
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            elif name == "generator.bn.bias":
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    _power_iterate(net)
    _fill_statistics(net, config.n_stats, g)
    return net


def _save(net, directory, state=None) -> str:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(net.config.to_json_string())
    torch.save(net.state_dict() if state is None else state, directory / "pytorch_model.bin")
    return str(directory)


@pytest.fixture(scope="module")
def reference_model(ref):
    """``reference_model(resolution)``: the reference model for a published layer list, built once."""
    built: dict = {}

    def get(resolution: int):
        if resolution not in built:
            built[resolution] = _reference_model(ref, resolution)
        return built[resolution]

    return get


@pytest.fixture(scope="module", params=[128, 256, 512], ids=lambda r: f"deep-{r}")
def published_layout(request, reference_model, tmp_path_factory):
    """(reference model, directory in the published layout) for one of the published layer lists."""
    net = reference_model(request.param)
    return net, _save(net, tmp_path_factory.mktemp(f"biggan-deep-{request.param}") / "g")


def _inputs(psi: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``z`` (ψ · truncated normal, as BigGAN samples) and class rows: one-hot class 1, a soft
    mix, one-hot class 3 with row 0's ``z``."""
    z = truncated_noise(3, Z_DIM, psi, torch.Generator().manual_seed(7))
    z[2] = z[0]
    soft = torch.tensor([0.5, 0.0, 0.3, 0.0, 0.2])
    y = torch.stack([F.one_hot(torch.tensor(1), CLASSES).float(), soft, F.one_hot(torch.tensor(3), CLASSES)])
    return z, y.float()


@torch.no_grad()
def _images(net, z: torch.Tensor, y: torch.Tensor, psi: float, dtype=torch.float64) -> torch.Tensor:
    """A model's images in [0, 1] (the plugin's scaling), computed in ``dtype``."""
    net = copy.deepcopy(net).to(dtype)
    return net(z.to(dtype), y.to(dtype), psi).add(1).mul(0.5).clamp(0, 1)


def test_published_layer_lists_are_the_references(ref):
    for resolution in (128, 256, 512):
        ours, theirs = BigGANConfig.deep(resolution), _published(ref, resolution)
        assert ours.layers == [tuple(layer) for layer in theirs.layers]
        assert (ours.attention_layer_position, ours.n_stats, ours.eps) == (
            theirs.attention_layer_position,
            theirs.n_stats,
            theirs.eps,
        )
        assert ours.image_size == theirs.output_dim == resolution


@pytest.mark.parametrize("psi", GRID_PSI)
def test_plugin_gives_the_reference_images(published_layout, psi):
    net, directory = published_layout
    gen = build("cpu", weights=directory, truncation=psi)  # strict load of config.json + .bin
    z, y = _inputs(psi)
    exact = _images(net, z, y, psi)  # the reference in float64
    # the network the plugin loaded computes the reference's function: in float64 they agree to
    # rounding, where one altered tensor or row moves the images by 1e-3 and more (tests below)
    ours = _images(gen.net, z, y, psi)
    assert (ours - exact).abs().max() <= ATOL64
    # the plugin's own float32 sampling is as close to those images as the reference's float32 is
    got = gen.sample(y, z=z)
    assert got.shape == exact.shape == (3, 3, net.config.output_dim, net.config.output_dim)
    reference_error = (_images(net, z, y, psi, torch.float32).double() - exact).abs().max()
    assert (got.double() - exact).abs().max() <= F32_FACTOR * reference_error + F32_FLOOR
    # the comparison is not between constant images: the class moves the image, the soft row is
    # neither class, and most pixels are far from tanh's saturation
    assert (exact[0] - exact[2]).abs().max() > 0.05
    assert (exact[1] - exact[0]).abs().max() > 0.05 and (exact[1] - exact[2]).abs().max() > 0.05
    assert float(((exact > 0.005) & (exact < 0.995)).float().mean()) > 0.5


@pytest.fixture(scope="module")
def images_128(reference_model):
    """(z, y, the reference's float64 images at ψ = 0.5) for the 128 layer list."""
    net = reference_model(128)
    z, y = _inputs(0.5)
    return z, y, _images(net, z, y, 0.5)


def _perturbed(net, key: str, row: int | None = None) -> dict:
    state = {k: v.clone() for k, v in net.state_dict().items()}
    target = state[key] if row is None else state[key][row]
    target.mul_(1.5).add_(0.05)
    return state


@pytest.mark.parametrize(
    ("key", "row"),
    [
        ("generator.layers.6.bn_2.running_vars", 25),  # the row ψ = 0.5 reads
        ("generator.layers.8.gamma", None),  # the attention layer
        ("generator.gen_z.weight_u", None),  # stored spectral-norm vector (used as is in eval)
        ("generator.layers.10.conv_3.bias", None),  # the last block
        ("generator.bn.weight", None),  # the unconditional norm before conv_to_rgb
        ("embeddings.weight", None),
    ],
)
def test_one_altered_tensor_breaks_the_agreement(reference_model, images_128, tmp_path, key, row):
    """The oracle is sensitive: the same comparison fails when the loaded file differs from the
    reference model in one tensor (or one row of one)."""
    net, (z, y, exact) = reference_model(128), images_128
    gen = build("cpu", weights=_save(net, tmp_path / "g", _perturbed(net, key, row)), truncation=0.5)
    assert (_images(gen.net, z, y, 0.5) - exact).abs().max() > 1e-3


def test_rows_the_truncation_does_not_read_do_not_matter(reference_model, images_128, tmp_path):
    """At ψ = 0.5 exactly only row 25 is read, by both: altering rows 24 and 26 changes nothing."""
    net, (z, y, exact) = reference_model(128), images_128
    state = _perturbed(net, "generator.layers.6.bn_2.running_vars", 24)
    state["generator.layers.6.bn_2.running_vars"][26].mul_(1.5)
    gen = build("cpu", weights=_save(net, tmp_path / "g", state), truncation=0.5)
    assert (_images(gen.net, z, y, 0.5) - exact).abs().max() <= ATOL64


@pytest.mark.parametrize(
    ("psi", "mirror"),
    [
        (20.25 / 50, 20.75 / 50),  # between rows 20 and 21, a quarter of the way
        (33.9 / 50, 33.1 / 50),
        (0.14, 0.16),  # on the grid; the reference's modf(0.14 / 0.02) = (8.9e-16, 7.0)
        (0.94, 0.92),  # modf(0.94 / 0.02) = (0.99999..., 46.0)
    ],
)
def test_off_the_grid_the_reference_weights_the_rows_the_other_way_round(reference_model, psi, mirror):
    """The documented difference (``ptl_generators.biggan``): for ψ = (k + f)/50 ptl reads
    ``(1-f)·row k + f·row k+1``; the reference reads ``f·row k + (1-f)·row k+1``, which is ptl's
    value at ψ = (k + 1 - f)/50, and its floating-point ``modf`` turns ψ = 0.14 and 0.94 (also 0.28,
    0.56, 0.58) into f ≈ 0 or 1, i.e. a neighbouring row. On the rest of the grid (0.4, 0.5, 1.0
    above) both read the same row."""
    net = reference_model(128)
    ours = BigGAN(BigGANConfig.from_dict(net.config.to_dict()))
    ours.load_state_dict(net.state_dict(), strict=True)
    ours.eval()
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(3))
    y = F.one_hot(torch.tensor([0, 4]), CLASSES).float()
    theirs = _images(net, z, y, psi)
    assert (_images(ours, z, y, mirror) - theirs).abs().max() <= ATOL64
    assert (_images(ours, z, y, psi) - theirs).abs().max() > 1e-3  # the rows differ
