"""BigGAN-deep: the published layout, training/eval behaviour, truncation, conditioning, strict loads."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ptl_cli.errors import UserError
from ptl_generators.biggan import (
    BigGAN,
    BigGANConfig,
    SNConv2d,
    SNLinear,
    standing_statistics,
    truncated_noise,
)
from ptl_generators.biggan_generator import build


@pytest.mark.parametrize(
    ("resolution", "blocks", "params_m", "attn"),
    [(128, 10, 50.4, 256), (256, 12, 55.9, 512), (512, 14, 56.2, 512)],
)
def test_published_configs_have_the_published_layout(resolution, blocks, params_m, attn):
    with torch.device("meta"):
        net = BigGAN(BigGANConfig.deep(resolution))
    state = net.state_dict()
    assert net.config.image_size == resolution
    # the parameter counts TF Hub gives for BigGAN-deep 128/256/512
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(params_m, abs=0.05)
    # names and shapes of the converted TF Hub checkpoints (pytorch-pretrained-biggan layout)
    assert state["embeddings.weight"].shape == (128, 1000)
    assert state["generator.gen_z.weight_orig"].shape == (4 * 4 * 16 * 128, 256)
    assert "generator.gen_z.weight_u" in state and "generator.gen_z.weight_v" in state
    assert state["generator.layers.8.snconv1x1_theta.weight_orig"].shape == (attn // 8, attn, 1, 1)
    assert state["generator.layers.8.gamma"].shape == (1,)
    assert state["generator.layers.0.bn_0.running_means"].shape == (51, 2048)
    assert state["generator.layers.0.bn_0.scale.weight_orig"].shape == (2048, 256)
    assert state["generator.conv_to_rgb.weight_orig"].shape == (128, 128, 3, 3)
    assert {"generator.bn.weight", "generator.bn.bias", "generator.bn.running_vars"} <= set(state)
    assert sum(1 for k in state if k.endswith("conv_3.bias")) == blocks


def test_tiny_config_forward_backward_reaches_every_parameter(biggan_config):
    net = BigGAN(biggan_config(num_classes=3)).train()
    z = torch.randn(4, 8)
    y = F.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()
    out = net(z, y)
    assert out.shape == (4, 1, 16, 16)
    assert float(out.detach().abs().max()) <= 1.0
    with torch.no_grad():
        net.generator.layers[2].gamma.fill_(0.5)  # attention starts switched off (gamma = 0)
    net(z, y).square().mean().backward()
    no_grad = [
        n
        for n, p in net.named_parameters()
        if p.grad is None or (not n.endswith("gamma") and float(p.grad.abs().sum()) == 0)
    ]
    assert no_grad == []


def test_spectral_norm_trains_power_iteration_and_freezes_it_in_eval():
    torch.manual_seed(0)
    layer = SNLinear(6, 5)
    for _ in range(30):
        layer(torch.randn(2, 6))  # training mode: one power iteration per call
    sigma = torch.linalg.matrix_norm(layer.sn_weight().detach(), ord=2)
    assert float(sigma) == pytest.approx(1.0, abs=1e-3)
    layer.eval()
    u = layer.weight_u.clone()
    layer(torch.randn(2, 6))
    assert torch.equal(u, layer.weight_u)


def test_truncated_noise_is_bounded_and_reproducible():
    z = truncated_noise(2000, 8, 0.5, torch.Generator().manual_seed(1))
    assert float(z.abs().max()) <= 1.0  # ψ · 2
    assert torch.equal(z, truncated_noise(2000, 8, 0.5, torch.Generator().manual_seed(1)))
    assert float(z.std()) == pytest.approx(0.5 * 0.8796, rel=0.05)  # std of N(0,1) cut at ±2


def test_truncation_selects_and_interpolates_standing_statistics(biggan_config):
    net = BigGAN(biggan_config())
    standing_statistics(net, batches=1, batch_size=16, generator=torch.Generator().manual_seed(0))
    bn = net.generator.layers[0].bn_0
    assert not torch.equal(bn.running_means[1], bn.running_means[10])  # filled per truncation row
    mean, var = bn._stats(0.15)  # halfway between rows 1 (0.1) and 2 (0.2)
    assert torch.allclose(mean, (bn.running_means[1] + bn.running_means[2]) / 2)
    assert torch.allclose(var, (bn.running_vars[1] + bn.running_vars[2]) / 2)
    z = torch.randn(2, 8)
    y = F.one_hot(torch.tensor([0, 1]), 3).float()
    assert not torch.allclose(net(z, y, 0.4), net(z, y, 1.0))
    with pytest.raises(ValueError, match="truncation"):
        net(z, y, 0.0)


def _save_published_layout(net: BigGAN, directory, weights_name: str = "pytorch_model.bin") -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(net.config.to_dict()))
    torch.save(net.state_dict(), directory / weights_name)


def _ready(config) -> BigGAN:
    torch.manual_seed(0)
    net = BigGAN(config)
    standing_statistics(net, batches=1, batch_size=8, generator=torch.Generator().manual_seed(0))
    return net


def test_directory_weights_load_strictly_and_reproduce_the_network(tmp_path, biggan_config):
    net = _ready(biggan_config())
    _save_published_layout(net, tmp_path / "g")
    gen = build("cpu", weights=str(tmp_path / "g"), truncation=0.5)
    assert (gen.num_classes, gen.image_size, gen.channels, gen.latent_dim) == (3, 16, 1, 8)
    z = gen.noise(3, torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    expected = net.eval()(z, F.one_hot(y, 3).float(), 0.5).add(1).div(2)
    assert torch.allclose(gen.sample(y, z=z), expected, atol=1e-6)
    assert gen.id.startswith("biggan-") and gen.id.endswith("-t0.5")


def test_class_index_equals_one_hot_probabilities(tmp_path, biggan_config):
    _save_published_layout(_ready(biggan_config()), tmp_path / "g")
    gen = build("cpu", weights=str(tmp_path / "g"))
    y = torch.tensor([2, 0, 1, 1])
    z = gen.noise(4, torch.Generator().manual_seed(3))
    assert torch.equal(gen.sample(y, z=z), gen.sample(F.one_hot(y, 3).float(), z=z))


def test_soft_conditioning_is_the_mixed_class_embedding(tmp_path, biggan_config):
    net = _ready(biggan_config())
    _save_published_layout(net, tmp_path / "g")
    gen = build("cpu", weights=str(tmp_path / "g"))
    p = torch.tensor([[0.7, 0.0, 0.3]])
    z = gen.noise(1, torch.Generator().manual_seed(0))
    mixed_embedding = 0.7 * net.embeddings.weight[:, 0] + 0.3 * net.embeddings.weight[:, 2]
    expected = net.generator(torch.cat([z, mixed_embedding[None]], 1), 1.0).add(1).div(2)
    assert torch.allclose(gen.sample(p, z=z), expected, atol=1e-6)
    with pytest.raises(UserError, match="3 columns"):
        gen.sample(torch.ones(1, 4) / 4)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_checkpoint_with_wrong_keys_is_an_error(tmp_path, biggan_config, damage):
    net = _ready(biggan_config())
    state = net.state_dict()
    if damage == "missing":
        del state["generator.layers.1.conv_2.weight_orig"]
    elif damage == "unexpected":
        state["generator.layers.1.extra.weight"] = torch.zeros(1)
    else:
        state["embeddings.weight"] = torch.zeros(8, 4)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "config.json").write_text(json.dumps(net.config.to_dict()))
    torch.save(state, tmp_path / "g" / "pytorch_model.bin")
    words = {"missing": "missing keys", "unexpected": "unexpected keys", "shape": "shape mismatch"}[damage]
    with pytest.raises(UserError, match=words):
        build("cpu", weights=str(tmp_path / "g"))


def test_safetensors_directory_and_bad_inputs(tmp_path, biggan_config):
    from safetensors.torch import save_file

    net = _ready(biggan_config())
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "config.json").write_text(json.dumps(net.config.to_dict()))
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "g" / "model.safetensors")
    )
    assert build("cpu", weights=str(tmp_path / "g")).num_classes == 3
    with pytest.raises(UserError, match="not a BigGAN directory"):
        build("cpu", weights=str(tmp_path))
    with pytest.raises(UserError, match="not a hub id"):
        build("cpu", weights="./no/such/dir")
    (tmp_path / "g" / "config.json").write_text(json.dumps({**net.config.to_dict(), "bogus": 1}))
    with pytest.raises(UserError, match="bogus"):
        build("cpu", weights=str(tmp_path / "g"))


# -- fidelity to the published checkpoints -----------------------------------------------------------
@pytest.mark.parametrize(("resolution", "dump_mib"), [(128, 201), (256, 224), (512, 225)])
def test_published_configs_have_every_published_tensor(resolution, dump_mib):
    """The release notes give each dump's size (201/224/225 MB): parameters *and* buffers (u, v,
    51 rows of standing statistics). A missing or extra buffer kind would change the total."""
    with torch.device("meta"):
        net = BigGAN(BigGANConfig.deep(resolution))
    size = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert math.ceil(size / 2**20) == dump_mib


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_spectral_norm_layers_are_torch_spectral_norm_key_for_key(kind):
    """The converted checkpoints were written by ``torch.nn.utils.spectral_norm`` modules: ours
    load their state dicts strictly and compute the same weight, in eval (stored u, v) and in
    training (one power iteration, same u/v updates)."""
    torch.manual_seed(0)
    if kind == "linear":
        ours, ref, x = SNLinear(6, 5), torch.nn.utils.spectral_norm(torch.nn.Linear(6, 5)), torch.randn(3, 6)
    else:
        ours = SNConv2d(4, 6, 3, padding=1)
        ref = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 6, 3, padding=1))
        x = torch.randn(2, 4, 5, 5)
    for _ in range(3):
        ours(x)  # training mode: move u, v away from their initial values
    ref.load_state_dict(ours.state_dict(), strict=True)
    assert set(ref.state_dict()) == set(ours.state_dict())
    ours.eval(), ref.eval()
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    ours.train(), ref.train()
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    assert torch.allclose(ours.weight_u, ref.weight_u, atol=1e-6)
    assert torch.allclose(ours.weight_v, ref.weight_v, atol=1e-6)


@pytest.mark.parametrize("psi", [0.14, 0.28, 0.4, 0.56, 0.58, 0.94, 1.0])
def test_truncation_on_the_grid_uses_exactly_its_own_row(psi):
    """ψ = k/50 reads row k. (The original's ``modf(ψ / 0.02)`` lands on a neighbouring row for
    0.14, 0.28, 0.56, 0.58 and 0.94 through floating-point rounding.)"""
    from ptl_generators.biggan import BigGANBatchNorm

    bn = BigGANBatchNorm(3, None, 51, 1e-4)
    bn.running_means.copy_(torch.arange(51.0)[:, None].expand(51, 3))
    mean, _ = bn._stats(psi)
    assert torch.equal(mean, torch.full((3,), float(round(psi * 50))))


# -- where published weights come from -----------------------------------------------------------------
@pytest.fixture
def file_server(tmp_path):
    """A local HTTP server for ``tmp_path/served`` (the download code path, with no internet)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_published_checkpoint_is_downloaded_once_then_read_from_the_ptl_cache(
    tmp_path, monkeypatch, biggan_config, file_server
):
    from ptl_generators import biggan_generator

    served, base = file_server
    net = _ready(biggan_config())
    (served / "biggan-deep-128-config.json").write_text(json.dumps(net.config.to_dict()))
    torch.save(net.state_dict(), served / "biggan-deep-128-pytorch_model.bin")
    monkeypatch.delenv("PTL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("PTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        biggan_generator,
        "PUBLISHED",
        {"biggan-deep-128": f"{base}/biggan-deep-128", "biggan-deep-256": f"{base}/biggan-deep-256"},
    )
    gen = build("cpu", weights="biggan-deep-128", truncation=0.5)
    cached = tmp_path / "cache" / "biggan" / "biggan-deep-128"
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "pytorch_model.bin"]
    z = gen.noise(2, torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2])
    expected = net.eval()(z, F.one_hot(y, 3).float(), 0.5).add(1).div(2)
    assert torch.allclose(gen.sample(y, z=z), expected, atol=1e-6)
    for f in served.iterdir():
        f.unlink()  # now only the cache has them
    monkeypatch.setenv("PTL_OFFLINE", "1")
    assert torch.equal(
        build("cpu", weights="biggan-deep-128", truncation=0.5).sample(y, z=z), gen.sample(y, z=z)
    )
    monkeypatch.delenv("PTL_OFFLINE")
    with pytest.raises(
        UserError, match=r"could not be downloaded from http://127\.0\.0\.1:\d+/biggan-deep-256"
    ) as err:
        build("cpu", weights="biggan-deep-256")
    assert "404" in str(err.value) and "\n" not in str(err.value)
    assert not list((tmp_path / "cache" / "biggan" / "biggan-deep-256").iterdir())  # no partial file


def test_hub_id_is_read_from_the_hugging_face_cache_offline(offline_env, biggan_config):
    from pathlib import Path

    net = _ready(biggan_config())
    repo = Path(offline_env["HF_HOME"]) / "hub" / "models--someone--my-biggan"
    commit = "0123456789abcdef0123456789abcdef01234567"
    _save_published_layout(net, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    gen = build("cpu", weights="someone/my-biggan")
    assert gen.source == "someone/my-biggan" and gen.num_classes == 3
