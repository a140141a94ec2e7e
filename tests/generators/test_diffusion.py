"""The diffusers generator on tiny, randomly initialized real diffusers models (UNet and DiT)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ptl_cli.errors import UserError
from ptl_cli.testing import check_generator
from ptl_generators.diffusion import MixableEmbedding, build, make_mixable


def _tiny_unet(tiny, classes: int = 3):
    torch.manual_seed(0)
    return tiny.class_unet(classes=classes + 1)  # + the null class


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory, tiny_diffusers):
    """A diffusers pipeline directory: unet/ + scheduler/ + ptl.json (null class 3)."""
    from diffusers import DDIMScheduler

    root = tmp_path_factory.mktemp("unet-pipeline")
    _tiny_unet(tiny_diffusers).save_pretrained(root / "unet")
    DDIMScheduler(num_train_timesteps=100, clip_sample=True).save_pretrained(root / "scheduler")
    (root / "ptl.json").write_text(json.dumps({"null_class": 3, "class_names": ["a", "b", "c"]}))
    return root


@pytest.fixture(scope="module")
def dit_dir(tmp_path_factory, tiny_diffusers):
    """A DiT pipeline directory (transformer/ + vae/ + scheduler/) with a 3-class label table."""
    from diffusers import DDIMScheduler

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("dit-pipeline")
    tiny_diffusers.dit(classes=3).save_pretrained(root / "transformer")
    tiny_diffusers.vae(sample_size=8).save_pretrained(root / "vae")
    DDIMScheduler(num_train_timesteps=100).save_pretrained(root / "scheduler")
    return root


def test_mixable_embedding_looks_up_indices_and_mixes_rows():
    table = torch.nn.Embedding(4, 5)
    mixable = make_mixable(table)
    assert isinstance(mixable, MixableEmbedding) and mixable.weight is table.weight
    idx = torch.tensor([0, 3, 1])
    assert torch.equal(mixable(idx), table(idx))
    assert torch.allclose(mixable(F.one_hot(idx, 4).float()), table(idx))
    p = torch.tensor([[0.25, 0.75, 0.0, 0.0]])
    assert torch.allclose(mixable(p), 0.25 * table.weight[0] + 0.75 * table.weight[1])
    with pytest.raises(ValueError, match="4 columns"):
        mixable(torch.ones(1, 3))


def test_unet_generator_keeps_the_contract(unet_dir):
    gen = check_generator(build, {"weights": str(unet_dir), "steps": 3, "guidance_scale": 2.0})
    assert (gen.num_classes, gen.channels, gen.image_size, gen.latent_dim) == (3, 1, 8, 64)
    assert gen.class_names == ("a", "b", "c")
    # the swap is per instance and keeps the state-dict keys of the saved model
    assert "class_embedding.weight" in gen.model.state_dict()
    assert isinstance(gen.model.class_embedding, MixableEmbedding)


def test_unet_soft_conditioning_feeds_the_mixed_embedding(unet_dir):
    gen = build("cpu", weights=str(unet_dir), steps=2, guidance_scale=1.0)
    table = gen.model.class_embedding.weight
    x = torch.randn(1, 1, 8, 8)
    t = torch.tensor(50)
    p = torch.tensor([[0.6, 0.4, 0.0, 0.0]])
    soft = gen.model(x, t, class_labels=p).sample
    mixed = (0.6 * table[0] + 0.4 * table[1])[None]
    # the same forward with the class embedding added by hand: the "identity" embedding path
    gen.model.class_embedding = torch.nn.Identity()
    by_hand = gen.model(x, t, class_labels=mixed).sample
    assert torch.allclose(soft, by_hand, atol=1e-6)


def test_initial_noise_z_makes_sampling_deterministic(unet_dir):
    gen = build("cpu", weights=str(unet_dir), steps=3)
    z = gen.noise(2, torch.Generator().manual_seed(5))
    assert z.shape == (2, 1, 8, 8)
    y = torch.tensor([0, 2])
    assert torch.equal(gen.sample(y, z=z), gen.sample(y, z=z))
    with pytest.raises(UserError, match="z must have shape"):
        gen.sample(y, z=torch.randn(2, 64))


def test_dit_generator_keeps_the_contract_with_vae_decoding(dit_dir):
    gen = check_generator(build, {"weights": str(dit_dir), "steps": 2, "guidance_scale": 1.5}, batch=2)
    assert (gen.num_classes, gen.channels, gen.image_size, gen.latent_shape) == (3, 3, 8, (4, 4, 4))
    assert gen.null_class == 3 and gen.table_size == 4
    tables = [m for m in gen.model.modules() if isinstance(m, MixableEmbedding)]
    assert len(tables) == 2  # one label table per transformer block, all swapped


def test_missing_or_unexpected_keys_in_a_diffusers_directory_are_errors(tmp_path, tiny_diffusers):
    from safetensors.torch import load_file, save_file

    unet = _tiny_unet(tiny_diffusers)
    unet.save_pretrained(tmp_path / "m")
    file = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(file))
    save_file({k: v for k, v in state.items() if k != "conv_out.weight"}, str(file))
    with pytest.raises(UserError, match="missing keys: conv_out.weight"):
        build("cpu", weights=str(tmp_path / "m"))
    save_file({**state, "extra.weight": torch.zeros(1)}, str(file))
    with pytest.raises(UserError, match="unexpected keys: extra.weight"):
        build("cpu", weights=str(tmp_path / "m"))


def test_unconditional_unet_is_refused(tmp_path):
    from diffusers import UNet2DModel

    UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    ).save_pretrained(tmp_path / "u")
    with pytest.raises(UserError, match="no class embedding"):
        build("cpu", weights=str(tmp_path / "u"))


def test_checkpoints_with_pre_0_15_attention_names_load(tmp_path, dit_dir):
    """The Stable Diffusion VAE that DiT decodes with (and older UNet2DModel uploads) name attention
    weights query/key/value/proj_attn; they load under diffusers' own renaming, sample identically."""
    import shutil

    from safetensors.torch import load_file, save_file

    legacy = tmp_path / "dit-legacy"
    shutil.copytree(dit_dir, legacy)
    file = legacy / "vae" / "diffusion_pytorch_model.safetensors"
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, tensor in load_file(str(file)).items():
        for new, old in old_names.items():
            key = key.replace(f"attentions.0.{new}.", f"attentions.0.{old}.")
        renamed[key] = tensor
    assert any(".query.weight" in k for k in renamed) and not any(".to_q." in k for k in renamed)
    save_file(renamed, str(file))
    y = torch.tensor([0, 2])
    modern = build("cpu", weights=str(dit_dir), steps=2).sample(y, generator=torch.Generator().manual_seed(0))
    old = build("cpu", weights=str(legacy), steps=2).sample(y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(modern, old)
    save_file({**renamed, "decoder.mid_block.attentions.0.bogus.weight": torch.zeros(1)}, str(file))
    with pytest.raises(UserError, match="unexpected keys: decoder.mid_block.attentions.0.bogus.weight"):
        build("cpu", weights=str(legacy))  # the renaming is not a licence for anything else


def test_eta_defaults_to_the_model_files_own_setting(tmp_path, unet_dir):
    from ptl_generators import weights as W

    assert build("cpu", weights=str(unet_dir)).eta == 0.0  # nothing recorded: deterministic DDIM
    state, meta = W.read_single(W.bundled("ddpm-fashion04.safetensors"))
    assert build("cpu").eta == meta["sampling"]["eta"] == 1.0  # the bundled DDPM's card explains why
    assert build("cpu", eta=0.0).eta == 0.0
    meta["sampling"] = {"eta": 0.5}
    W.save_single(tmp_path / "m.safetensors", state, meta)
    gen = build("cpu", weights=str(tmp_path / "m.safetensors"), steps=3)
    assert gen.eta == 0.5 and gen.id.endswith("-e0.5")
    # eta > 0 draws noise at every step from the generator: seeded, it still reproduces
    y, z = torch.tensor([0, 4]), gen.noise(2, torch.Generator().manual_seed(1))
    a = gen.sample(y, z=z, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, gen.sample(y, z=z, generator=torch.Generator().manual_seed(2)))
    assert not torch.equal(a, gen.sample(y, z=z, generator=torch.Generator().manual_seed(3)))


def test_hub_repository_with_bin_weights_only_is_fetched_as_bin(tmp_path, monkeypatch, tiny_diffusers):
    """From the hub, safetensors are asked for first; a repository that has only .bin weights is
    asked again for those (a stand-in for the hub serves files by pattern, as snapshot_download)."""
    import fnmatch
    import shutil

    import huggingface_hub

    monkeypatch.delenv("PTL_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    repo = tmp_path / "remote"
    _tiny_unet(tiny_diffusers).save_pretrained(repo / "unet", safe_serialization=False)  # .bin only
    assert not list(repo.rglob("*.safetensors"))
    asked = []

    def snapshot_download(repo_id, cache_dir, allow_patterns=None, local_files_only=False):
        local = Path(cache_dir) / repo_id.replace("/", "--")
        if local_files_only:
            if not local.is_dir():
                raise FileNotFoundError(repo_id)
            return str(local)
        asked.append(allow_patterns)
        for file in repo.rglob("*"):
            rel = file.relative_to(repo).as_posix()
            if file.is_file() and any(fnmatch.fnmatch(rel, p) for p in allow_patterns):
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, local / rel)
        return str(local)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    gen = build("cpu", weights="someone/unet-bin-only", steps=2, guidance_scale=1.0)
    assert asked == [["*.json", "*.safetensors"], ["*.json", "*.bin"]]
    assert gen.num_classes == 4  # no null class recorded: every table row is a class
