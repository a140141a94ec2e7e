"""Tiny randomly initialized diffusers models, built from configs, shared by the diffusion tests.

One place for the small VAE, class-conditional UNet, DiT transformer and text-conditioned UNet
that the UNet, DiT, Stable Diffusion and SDXL tests build: each builder takes only what those
tests vary. The callers seed ``torch`` and keep their construction order, so the random weights
(and the numbers the tests compare) stay what they were.

Tests reach this module through the ``tiny_diffusers`` fixture (``tests/conftest.py``): with
``--import-mode=importlib`` a test module cannot import a sibling module.
"""

from __future__ import annotations

from typing import Any


def vae(sample_size: int):
    """An ``AutoencoderKL`` with two 8-channel blocks and 4 latent channels (×2 downsampling)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
    )


def class_unet(classes: int):
    """A class-conditional ``UNet2DModel`` on 8×8 one-channel images, attention at the lower level,
    ``classes`` label embeddings (the null class included)."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        num_class_embeds=classes,
        attention_head_dim=None,
    )


def dit(classes: int):
    """DiT-XL/2's structure, tiny: 4×4×4 latents, patches of 2, learned sigma (8 output
    channels, eps and variance), ``classes`` label embeddings (the null class included)."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=4,
        patch_size=2,
        num_embeds_ada_norm=classes,
        norm_num_groups=2,
    )


def cond_unet(cross_attention_dim: int, **extra: Any):
    """A ``UNet2DConditionModel`` on 8×8×4 latents with one cross-attention level; ``extra``
    adds what SDXL's UNet has (the added pooled-text and size embedding)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=2,
        norm_num_groups=4,
        **extra,
    )


# Stable Diffusion's training schedule, shared by its DDIM and Euler schedulers.
SD_SCHEDULE: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    beta_end=0.012,
    steps_offset=1,
)
