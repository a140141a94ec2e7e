"""The ``stable-diffusion`` generator against diffusers' own ``StableDiffusionPipeline``.

On a tiny random pipeline saved the way hub pipelines are: a class's prompt embedding is what the
pipeline's ``encode_prompt`` gives for its prompt (averaged over templates); ptl's sampler given
``prompt_embeds`` and noise gives the pipeline's images, with and without guidance, also with a
stochastic few-step scheduler; one-hot rows are index conditioning; a 50/50 mix feeds the average
of two prompt embeddings where ``prompt_embeds`` go (the tiny model's images cannot be judged by
eye, so the honest check is: the mix equals the average, the image equals the pipeline's for that
average, and differs from both pure classes' images). The same for ``StableDiffusionXLPipeline``:
two text encoders, and a pooled embedding mixed with the same rows.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ptl_cli import plugins

from .conftest import CLASSES

STEPS = 3


def build(directory, **params):
    params = {"weights": str(directory), "classes": CLASSES, "steps": STEPS, **params}
    return plugins.get("generators", "stable-diffusion").build("cpu", params=params)


def reference(pipe, gen, embeds, z, guidance, seed=0, eta=0.0):
    negative = gen.negative.expand(embeds.shape[0], -1, -1)
    return pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        latents=z,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        eta=eta,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    ).images


@pytest.fixture
def guided(sd):
    return build(sd[1], guidance_scale=3.0)


def test_class_embeddings_are_the_pipelines_prompt_embeddings(sd):
    pipe, directory = sd
    templates = ["a photo of a {name}.", "a blurry photo of a {name}."]
    gen = build(directory, templates=templates)
    for c, name in enumerate(CLASSES):
        spoken = [t.format(name=name) for t in templates]
        embeds = [pipe.encode_prompt(p, "cpu", 1, True, "")[0][0] for p in spoken]
        torch.testing.assert_close(gen.embeddings[c], torch.stack(embeds).mean(0), rtol=0, atol=1e-6)
    empty = pipe.encode_prompt("x", "cpu", 1, True, "")[1][0]
    torch.testing.assert_close(gen.negative[0], empty, rtol=0, atol=0)
    assert not torch.equal(gen.embeddings[0], gen.embeddings[1])


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_samples_equal_the_diffusers_pipeline(sd, guidance):
    pipe, directory = sd
    gen = build(directory, guidance_scale=guidance)
    z = gen.noise(2, torch.Generator().manual_seed(0))
    ours = gen.sample(torch.tensor([0, 2]), z=z)
    ref = reference(pipe, gen, gen.embeddings[[0, 2]], z, guidance)
    assert ours.shape == (2, 3, 16, 16) and ours.min() >= 0 and ours.max() <= 1
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    other = gen.sample(torch.tensor([1, 2]), z=z)
    assert (other[0] - ours[0]).abs().max() > 1e-3 and torch.allclose(other[1], ours[1], atol=1e-6)


def test_a_stochastic_few_step_scheduler_equals_the_pipeline_and_is_seeded(sd):
    """Ancestral Euler with trailing timesteps (SD-Turbo's way): per-step noise from ``generator``."""
    from diffusers import EulerAncestralDiscreteScheduler

    pipe, directory = sd
    gen = build(directory, scheduler="euler-ancestral", timestep_spacing="trailing", guidance_scale=2.0)
    z = gen.noise(2, torch.Generator().manual_seed(3))
    ours = gen.sample(torch.tensor([1, 0]), z=z, generator=torch.Generator().manual_seed(5))
    again = gen.sample(torch.tensor([1, 0]), z=z, generator=torch.Generator().manual_seed(5))
    other_seed = gen.sample(torch.tensor([1, 0]), z=z, generator=torch.Generator().manual_seed(6))
    original = pipe.scheduler
    try:
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(
            original.config, timestep_spacing="trailing"
        )
        ref = reference(pipe, gen, gen.embeddings[[1, 0]], z, 2.0, seed=5)
    finally:
        pipe.scheduler = original
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    assert torch.equal(ours, again) and (ours - other_seed).abs().max() > 1e-3
    assert "euler-ancestral-trailing" in gen.id and gen.id != build(directory).id


def test_one_hot_rows_are_index_conditioning(guided):
    z = guided.noise(3, torch.Generator().manual_seed(1))
    by_index = guided.sample(torch.tensor([2, 0, 1]), z=z)
    by_rows = guided.sample(torch.eye(3)[[2, 0, 1]], z=z)
    assert torch.equal(by_index, by_rows)


def test_a_mix_feeds_the_average_prompt_embedding(sd, guided):
    pipe, _ = sd
    mix = torch.tensor([[0.5, 0.0, 0.5]])
    average = (guided.embeddings[0] + guided.embeddings[2]) / 2
    torch.testing.assert_close(guided.condition(mix)[0], average, rtol=0, atol=1e-7)
    z = guided.noise(1, torch.Generator().manual_seed(2))
    mixed = guided.sample(mix, z=z)
    torch.testing.assert_close(mixed, reference(pipe, guided, average[None], z, 3.0), rtol=0, atol=1e-6)
    for c in (0, 2):
        assert (mixed - guided.sample(torch.tensor([c]), z=z)).abs().max() > 1e-3


def test_seeded_sampling_is_deterministic_and_sizes_follow_image_size(sd):
    gen = build(sd[1], image_size=24)
    assert gen.latent_shape == (4, 12, 12) and gen.image_size == 24 and gen.num_classes == 3
    a = gen.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    b = gen.sample(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 24, 24) and torch.equal(a, b)


def test_class_names_from_a_file_and_bad_settings(sd, tmp_path):
    from ptl_cli.errors import UserError

    names = tmp_path / "names.txt"
    names.write_text("cat\n\ndog\n")
    gen = build(sd[1], classes=str(names))
    assert gen.class_names == ("cat", "dog") and gen.embeddings.shape[0] == 2
    spec = plugins.get("generators", "stable-diffusion")
    for params, words in [
        ({"templates": ["a photo of a {label}"]}, "must contain {name}"),
        ({"classes": "no-such-file.txt"}, "not 'imagenet' and no such file"),
        ({"classes": ["cat", "cat"]}, "more than once"),
        ({"weights": str(tmp_path)}, "no model_index.json"),
    ]:
        with pytest.raises(UserError, match=words):
            spec.build("cpu", params=params)
    with pytest.raises(UserError, match=r"class indices must be in 0\.\.1"):
        gen.sample(torch.tensor([2]))


def test_offline_without_weights_is_one_line(tmp_path):
    env = {
        "HF_HUB_OFFLINE": "1",
        "PTL_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-m", "ptl_cli", "generate", "-g", "stable-diffusion", "--classes", "0",
         "-p", "weights=stabilityai/sd-turbo", "-p", "classes=[\"cat\"]", "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'stabilityai/sd-turbo' are not in the Hugging Face cache" in lines[0]
    assert "ptl is offline" in lines[0]


# -- SDXL: two text encoders, a pooled embedding mixed with the same rows ---------------------------
def test_sdxl_tables_are_the_pipelines_prompt_and_pooled_embeddings(sdxl):
    pipe, directory = sdxl
    gen = build(directory, guidance_scale=3.0)
    assert gen.xl and gen.embeddings.shape == (3, 40, 32) and gen.prompts.pooled.shape == (3, 8)
    for c, name in enumerate(CLASSES):
        embeds, _, pooled, _ = pipe.encode_prompt(f"a photo of a {name}.", device="cpu")
        torch.testing.assert_close(gen.embeddings[c], embeds[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(gen.prompts.pooled[c], pooled[0], rtol=0, atol=1e-6)
    _, negative, _, negative_pooled = pipe.encode_prompt("x", device="cpu")  # no negative: zeros
    assert not negative.any() and not negative_pooled.any()
    assert torch.equal(gen.negative[0], negative[0]) and not gen.prompts.negative_pooled.any()


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_sdxl_samples_equal_the_diffusers_pipeline_also_for_a_mix(sdxl, guidance):
    pipe, directory = sdxl
    gen = build(directory, guidance_scale=guidance)
    rows = torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    z = gen.noise(2, torch.Generator().manual_seed(4))
    ours = gen.sample(rows, z=z)
    tokens = torch.stack([gen.embeddings[1], (gen.embeddings[0] + gen.embeddings[2]) / 2])
    pooled = torch.stack([gen.prompts.pooled[1], (gen.prompts.pooled[0] + gen.prompts.pooled[2]) / 2])
    ref = pipe(
        prompt_embeds=tokens,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=gen.negative.expand(2, -1, -1),
        negative_pooled_prompt_embeds=gen.prompts.negative_pooled.expand(2, -1),
        latents=z,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        output_type="pt",
    ).images
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    alone = gen.sample(torch.tensor([1]), z=z[:1])  # another batch size: equal up to rounding
    torch.testing.assert_close(alone, ours[:1], rtol=0, atol=1e-6)
    assert (gen.sample(torch.tensor([0]), z=z[1:]) - ours[1:]).abs().max() > 1e-3


@pytest.mark.parametrize("pipeline", ["sd", "sdxl"])
def test_the_generator_contract_checks_pass(pipeline, request):
    from ptl_cli.testing import check_generator

    directory = request.getfixturevalue(pipeline)[1]
    check_generator("stable-diffusion", {"weights": str(directory), "classes": CLASSES, "steps": 2})


def test_prompt_tables_are_cached_on_disk_and_read_back(sd, tmp_path, monkeypatch):
    """The second build reads the stored table (a table written into the cache file is what it
    uses); other templates make another entry; a damaged file is recomputed."""
    from safetensors.torch import load_file

    from ptl_generators import weights as W

    monkeypatch.setenv("PTL_CACHE_DIR", str(tmp_path / "cache"))
    first = build(sd[1])
    (entry,) = (tmp_path / "cache" / "prompt-embeddings").iterdir()
    assert torch.equal(build(sd[1]).embeddings, first.embeddings)
    stored = load_file(str(entry))
    W.save_single(entry, {**stored, "tokens": stored["tokens"] + 1}, {"ptl_format": "prompt-embeddings"})
    assert torch.equal(build(sd[1]).embeddings, first.embeddings + 1)
    entry.write_bytes(b"damaged")
    assert torch.equal(build(sd[1]).embeddings, first.embeddings)
    build(sd[1], templates=["a drawing of a {name}."])
    assert len(list((tmp_path / "cache" / "prompt-embeddings").iterdir())) == 2
