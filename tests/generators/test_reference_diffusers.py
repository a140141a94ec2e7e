"""ptl's diffusion sampler against diffusers' own pipelines, on tiny random models built from configs.

* DiT: ``DiTPipeline`` (its loop, guidance and VAE decoding) against the ``diffusers`` plugin
  loading the same pipeline directory, with and without classifier-free guidance, also for a
  directory written the way the hub's DiT checkpoints are (``Transformer2DModel`` configs).
* class-conditional ``UNet2DModel``: diffusers has no class-conditional pipeline, so the reference
  is ``DDIMPipeline`` — its noise draws, ``DDIMScheduler`` steps with ``eta`` and per-step noise
  from the same generator — driven by a UNet adapter that feeds integer labels and applies
  guidance with the null class; the bundled DDPM (DDIM with η = 1, 2×2 patches) as well.
* soft conditioning: a probability row ``p`` gives what the reference gives for a class whose
  embedding row is ``p @ table`` (written into a copy of the model); one-hot rows give exactly
  what class indices give.

Every comparison also shows that its inputs matter: another class moves the samples.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptl_generators.diffusion import build

ATOL = 1e-6  # float32, a handful of steps; observed: 2.4e-7 (DiT), 0 (UNet)
STEPS = 4


def _no_progress(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


# -- DiT -------------------------------------------------------------------------------------------
def _tiny_dit_pipeline(tiny):
    """DiT-XL/2's structure, tiny: learned sigma (8 output channels), 1000 classes + the null class
    (``DiTPipeline`` hard-codes 1000 as the null label), a small VAE, DDIM."""
    from diffusers import DDIMScheduler, DiTPipeline

    torch.manual_seed(0)
    transformer = tiny.dit(classes=1000)
    vae = tiny.vae(sample_size=8)
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    return _no_progress(DiTPipeline(transformer=transformer.eval(), vae=vae.eval(), scheduler=scheduler))


@pytest.fixture(scope="module")
def dit(tmp_path_factory, tiny_diffusers):
    """(reference pipeline, its directory as ``save_pretrained`` writes it)."""
    pipe = _tiny_dit_pipeline(tiny_diffusers)
    directory = tmp_path_factory.mktemp("dit") / "pipeline"
    pipe.save_pretrained(directory)
    return pipe, directory


def _dit_reference(pipe, labels: list[int], guidance: float, seed: int) -> torch.Tensor:
    return pipe(
        class_labels=labels,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        num_inference_steps=STEPS,
        output_type="pt",
    ).images


def _dit_noise(batch: int, seed: int) -> torch.Tensor:
    """The latents ``DiTPipeline`` draws first from a generator seeded with ``seed``."""
    return torch.randn((batch, 4, 4, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_dit_samples_are_dit_pipelines(dit, guidance):
    pipe, directory = dit
    gen = build("cpu", weights=str(directory), steps=STEPS, guidance_scale=guidance)
    labels = [3, 917]
    expected = _dit_reference(pipe, labels, guidance, seed=0)
    got = gen.sample(torch.tensor(labels), z=_dit_noise(2, seed=0))
    assert got.shape == expected.shape == (2, 3, 8, 8)
    assert (got - expected).abs().max() <= ATOL
    # one-hot probability rows are class indices, exactly
    one_hot = F.one_hot(torch.tensor(labels), 1000).float()
    assert torch.equal(gen.sample(one_hot, z=_dit_noise(2, seed=0)), got)
    # the inputs matter: another class, and the guidance scale, move the samples
    other = _dit_reference(pipe, [4, 917], guidance, seed=0)
    assert (other[0] - expected[0]).abs().max() > 1e-2
    assert torch.allclose(other[1], expected[1], atol=ATOL)  # the unchanged label's sample stays
    if guidance != 1.0:
        assert (_dit_reference(pipe, labels, 1.0, seed=0) - expected).abs().max() > 1e-2


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_dit_soft_rows_are_the_mixed_label_embedding(dit, guidance):
    """``p`` conditions like a class whose label-embedding row (in every block) is ``p @ table``."""
    pipe, directory = dit
    gen = build("cpu", weights=str(directory), steps=STEPS, guidance_scale=guidance)
    p = torch.zeros(1, 1000)
    p[0, 3], p[0, 917], p[0, 40] = 0.6, 0.3, 0.1
    mixed = copy.deepcopy(pipe)
    with torch.no_grad():
        for block in mixed.transformer.transformer_blocks:
            table = block.norm1.emb.class_embedder.embedding_table.weight
            table[0] = p[0] @ table[:1000]
    expected = _dit_reference(_no_progress(mixed), [0], guidance, seed=1)
    got = gen.sample(p, z=_dit_noise(1, seed=1))
    assert (got - expected).abs().max() <= ATOL
    for label in (0, 3, 917):  # neither the class whose row was replaced nor one of the mixed
        assert (_dit_reference(pipe, [label], guidance, seed=1) - got).abs().max() > 1e-2


def test_dit_written_as_the_hub_writes_it(dit, tmp_path):
    """facebook/DiT-XL-2-256 was saved by diffusers 0.12 as a ``Transformer2DModel`` with its
    then-current keys; diffusers maps that to ``DiTTransformer2DModel``, and so must ptl."""
    import shutil

    from diffusers import DiTPipeline

    _, directory = dit
    legacy = tmp_path / "hub-style"
    shutil.copytree(directory, legacy)
    config = json.loads((legacy / "transformer" / "config.json").read_text())
    config.update(
        _class_name="Transformer2DModel",
        _diffusers_version="0.12.0.dev0",
        cross_attention_dim=None,
        num_vector_embeds=None,
        only_cross_attention=False,
        use_linear_projection=False,
    )
    (legacy / "transformer" / "config.json").write_text(json.dumps(config))
    index = json.loads((legacy / "model_index.json").read_text())
    index["transformer"] = ["diffusers", "Transformer2DModel"]
    (legacy / "model_index.json").write_text(json.dumps(index))
    pipe = _no_progress(DiTPipeline.from_pretrained(legacy))
    gen = build("cpu", weights=str(legacy), steps=STEPS, guidance_scale=4.0)
    expected = _dit_reference(pipe, [5, 999], 4.0, seed=2)
    assert (gen.sample(torch.tensor([5, 999]), z=_dit_noise(2, seed=2)) - expected).abs().max() <= ATOL


# -- class-conditional UNet2DModel --------------------------------------------------------------------
class LabeledUNet(nn.Module):
    """What ``DDIMPipeline`` calls as its ``unet``: ``unet(x, t)`` for fixed integer ``labels``, with
    classifier-free guidance by the ``null`` label when ``scale`` is not 1 (``uncond + scale ·
    (cond - uncond)``, as ``DiTPipeline`` guides)."""

    def __init__(self, unet, labels: torch.Tensor, null: int, scale: float) -> None:
        super().__init__()
        self.unet, self.labels, self.null, self.scale = unet, labels, null, scale
        self.config = unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        from diffusers.models.unets.unet_2d import UNet2DOutput

        if self.scale == 1.0:
            return self.unet(x, t, class_labels=self.labels)
        null = torch.full_like(self.labels, self.null)
        out = self.unet(torch.cat([x, x]), t, class_labels=torch.cat([self.labels, null])).sample
        cond, uncond = out.chunk(2)
        return UNet2DOutput(sample=uncond + self.scale * (cond - uncond))


def _ddim_reference(unet, scheduler_config, labels, null, guidance, eta, seed) -> torch.Tensor:
    from diffusers import DDIMPipeline, DDIMScheduler

    pipe = DDIMPipeline(
        unet=LabeledUNet(unet, torch.as_tensor(labels), null, guidance),
        scheduler=DDIMScheduler.from_config(scheduler_config),
    )
    return _no_progress(pipe)(
        batch_size=len(labels),
        generator=torch.Generator().manual_seed(seed),
        eta=eta,
        num_inference_steps=STEPS,
        output_type="pt",
    ).images


NULL = 3  # three classes and the null class


@pytest.fixture(scope="module")
def unet(tmp_path_factory, tiny_diffusers):
    """(UNet, scheduler config, pipeline directory with ptl.json naming the null class)."""
    from diffusers import DDIMPipeline, DDIMScheduler

    torch.manual_seed(0)
    model = tiny_diffusers.class_unet(classes=NULL + 1).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True)
    directory = tmp_path_factory.mktemp("unet") / "pipeline"
    DDIMPipeline(unet=model, scheduler=scheduler).save_pretrained(directory)
    (directory / "ptl.json").write_text(json.dumps({"null_class": NULL}))
    return model, dict(scheduler.config), directory


@pytest.mark.parametrize(("guidance", "eta"), [(1.0, 0.0), (3.0, 0.0), (1.0, 1.0), (3.0, 0.5)])
def test_unet_samples_are_ddim_pipelines(unet, guidance, eta):
    """Same generator, nothing else: ptl draws ``x_T`` and each step's noise (η > 0) from it in the
    order ``DDIMPipeline`` does."""
    model, scheduler_config, directory = unet
    gen = build("cpu", weights=str(directory), steps=STEPS, guidance_scale=guidance, eta=eta)
    labels = [0, 2, 1]
    expected = _ddim_reference(model, scheduler_config, labels, NULL, guidance, eta, seed=0)
    got = gen.sample(torch.tensor(labels), generator=torch.Generator().manual_seed(0))
    assert got.shape == expected.shape == (3, 1, 8, 8)
    assert (got - expected).abs().max() <= ATOL
    one_hot = F.one_hot(torch.tensor(labels), NULL).float()
    assert torch.equal(gen.sample(one_hot, generator=torch.Generator().manual_seed(0)), got)
    other = _ddim_reference(model, scheduler_config, [1, 2, 1], NULL, guidance, eta, seed=0)
    assert (other[0] - expected[0]).abs().max() > 1e-2
    if eta > 0:  # the per-step noise matters: another seed for it alone moves the samples
        g = torch.Generator().manual_seed(0)
        z = gen.noise(3, g)
        assert torch.equal(gen.sample(torch.tensor(labels), z=z, generator=g), got)
        reseeded = gen.sample(torch.tensor(labels), z=z, generator=torch.Generator().manual_seed(9))
        assert (reseeded - got).abs().max() > 1e-2


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_unet_soft_rows_are_the_mixed_class_embedding(unet, guidance):
    model, scheduler_config, directory = unet
    gen = build("cpu", weights=str(directory), steps=STEPS, guidance_scale=guidance)
    p = torch.tensor([[0.25, 0.0, 0.75]])
    mixed = copy.deepcopy(model)
    with torch.no_grad():
        table = mixed.class_embedding.weight
        table[1] = p[0] @ table[:NULL]
    expected = _ddim_reference(mixed, scheduler_config, [1], NULL, guidance, 0.0, seed=3)
    got = gen.sample(p, generator=torch.Generator().manual_seed(3))
    assert (got - expected).abs().max() <= ATOL
    for label in (0, 1, 2):
        reference = _ddim_reference(model, scheduler_config, [label], NULL, guidance, 0.0, seed=3)
        assert (reference - got).abs().max() > 1e-2


def test_bundled_ddpm_is_ddim_with_its_eta_as_diffusers_runs_it():
    """The bundled DDPM samples with the η its file records (1, stochastic steps: see its model
    card) on 2×2-patched images: the reference runs the same weights on the patched images, and ptl's
    ``x_T`` is the reference's first draw un-patched (``pixel_shuffle``); the per-step noise comes
    from the same generator after it."""
    from diffusers import UNet2DModel

    gen = build("cpu", steps=STEPS, guidance_scale=2.0)
    assert gen.null_class == gen.num_classes  # guided by the null class
    reference = UNet2DModel.from_config(gen.model.config).eval()  # same weights, diffusers' own table
    reference.load_state_dict(gen.model.state_dict(), strict=True)
    config, patch, k = reference.config, gen.patch, gen.num_classes
    labels = [0, k // 2, k - 1]

    def run(labels: list[int]) -> torch.Tensor:
        images = _ddim_reference(reference, gen.scheduler_config, labels, k, 2.0, gen.eta, seed=4)
        return F.pixel_shuffle(images, patch)

    g = torch.Generator().manual_seed(4)
    first = torch.randn((3, config.in_channels, config.sample_size, config.sample_size), generator=g)
    got = gen.sample(torch.tensor(labels), z=F.pixel_shuffle(first, patch), generator=g)
    expected = run(labels)
    assert got.shape == expected.shape == (3, gen.channels, gen.image_size, gen.image_size)
    assert (got - expected).abs().max() <= ATOL
    assert (run([1, k // 2, k - 1])[0] - expected[0]).abs().max() > 1e-2
