"""Tiny real text-conditioned sources, built from configs with random weights and saved to disk.

A Stable Diffusion-style pipeline (``UNet2DConditionModel`` + ``AutoencoderKL`` + a tiny
``CLIPTextModel`` and a ``CLIPTokenizer`` whose vocabulary the fixture writes), saved with
``StableDiffusionPipeline.save_pretrained``, and a tiny ``CLIPModel`` folder: the layouts the hub
uses, so the plugins load them exactly as they load SD 1.5 or ``openai/clip-vit-base-patch32``.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

CLASSES = ["cat", "dog", "red car"]
LENGTH = 40  # tokens per prompt (SD: 77); this vocabulary spends one per character


def write_vocab(directory: Path) -> tuple[Path, Path]:
    """A character-level BPE vocabulary (no merges): every prompt the tests use can be spoken."""
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,-'")
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return directory / "vocab.json", directory / "merges.txt"


def tokenizer(directory: Path):
    from transformers import CLIPTokenizer

    vocab, merges = write_vocab(directory)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=LENGTH)


def text_config(tok, hidden: int = 16, projection: int | None = None) -> dict:
    return dict(
        vocab_size=len(tok.get_vocab()),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=LENGTH,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **({"projection_dim": projection} if projection else {}),
    )


def tiny_sd_pipeline(tmp: Path, tiny):
    """A StableDiffusionPipeline at 16×16 pixels (8×8×4 latents), DDIM with SD's schedule."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = tokenizer(tmp / "vocab")
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(tok)))
    unet = tiny.cond_unet(cross_attention_dim=16)
    vae = tiny.vae(sample_size=16)
    scheduler = DDIMScheduler(**tiny.SD_SCHEDULE, clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tok,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(tmp: Path, tiny):
    """A StableDiffusionXLPipeline at 16×16: two text encoders (the second with a projection, whose
    text embedding is the pooled one), a UNet with SDXL's added (pooled text, size) embedding."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tok = tokenizer(tmp / "vocab")
    tok_2 = tokenizer(tmp / "vocab-2")
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config(tok)))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config(tok_2, projection=8)))
    unet = tiny.cond_unet(
        cross_attention_dim=32,  # both encoders' hidden states side by side
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + 8,
    )
    vae = tiny.vae(sample_size=16)
    scheduler = EulerDiscreteScheduler(**tiny.SD_SCHEDULE, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tok,
        tokenizer_2=tok_2,
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip(directory: Path) -> Path:
    """A CLIPModel (16-wide text and vision towers, 16×16 images, patches of 4) saved with its
    tokenizer and image-processor config, as hub CLIP folders are."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = tokenizer(directory.parent / f"{directory.name}-vocab")
    torch.manual_seed(1)
    vision = dict(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=4,
    )
    model = CLIPModel(CLIPConfig(text_config=text_config(tok), vision_config=vision, projection_dim=8))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(
        directory
    )
    return directory


@pytest.fixture(scope="session")
def sd(tmp_path_factory, tiny_diffusers):
    """(the reference diffusers pipeline, its saved directory)."""
    tmp = tmp_path_factory.mktemp("sd")
    pipe = tiny_sd_pipeline(tmp, tiny_diffusers)
    pipe.save_pretrained(tmp / "pipeline")
    return pipe, tmp / "pipeline"


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="session")
def sdxl(tmp_path_factory, tiny_diffusers):
    """(the reference SDXL pipeline, its saved directory)."""
    tmp = tmp_path_factory.mktemp("sdxl")
    pipe = tiny_sdxl_pipeline(tmp, tiny_diffusers)
    pipe.save_pretrained(tmp / "pipeline")
    return pipe, tmp / "pipeline"
