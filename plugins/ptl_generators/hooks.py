"""Registers source generators, source classifiers, the ``train-source`` workflow and commands.

Entry point ``generators = "ptl_generators.hooks"``. The pydantic schemas are imported inside the
hooks (``ptl --help`` never pays for them); torch, diffusers and the models load when a
component is built.
"""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl

#: Source class counts known without loading the models (see ptl_generators.facts), for plans.
FACTS = "ptl_generators.facts:of"


@hookimpl
def ptl_register_generators(register: Any) -> None:
    from ptl_generators import params

    register(
        "biggan",
        "ptl_generators.biggan_generator:build",
        description="BigGAN(-deep): bundled Fashion-MNIST models, biggan-deep-128/256/512, or a local dir",
        params=params.BigGANParams,
        facts=FACTS,
    )
    register(
        "diffusers",
        "ptl_generators.diffusion:build",
        description="class-conditional diffusers UNet2DModel (bundled DDPM) or DiT, DDIM sampling with CFG",
        params=params.DiffusersParams,
        aliases=("ddpm",),
        facts=FACTS,
    )
    from ptl_generators import text_params

    register(
        "stable-diffusion",
        "ptl_generators.text_to_image:build",
        description="a diffusers text-to-image pipeline (SD 1.x/2.x, SDXL, Turbo): classes are prompts",
        params=text_params.StableDiffusionParams,
    )


@hookimpl
def ptl_register_classifiers(register: Any) -> None:
    from ptl_generators import params

    register(
        "bundled",
        "ptl_generators.classifiers:bundled",
        description="a bundled Fashion-MNIST classifier (Conv-4, 28×28 grey): coarse classes or 0-4",
        params=params.BundledClassifierParams,
        facts=FACTS,
    )
    register(
        "torchvision:*",
        "ptl_generators.classifiers:torchvision_classifier",
        description="an ImageNet classifier from torchvision, e.g. torchvision:resnet50 (cached download)",
        params=params.TorchvisionClassifierParams,
        facts=FACTS,
    )
    register(
        "checkpoint",
        "ptl_generators.classifiers:checkpoint",
        description="a local classifier file (ptl .safetensors, or a state dict + arch/size/normalization)",
        params=params.CheckpointClassifierParams,
    )
    from ptl_generators import text_params

    register(
        "clip",
        "ptl_generators.clip_classifier:build",
        description="CLIP zero-shot over class names from prompt templates (transformers; no source data)",
        params=text_params.ClipClassifierParams,
    )


@hookimpl
def ptl_register_workflows(register: Any) -> None:
    from ptl_generators import params

    register(
        "train-source",
        "ptl_generators.train:TrainSourceWorkflow",
        description="train a source generator (BigGAN-style or DDPM) or classifier on data you own",
        params=params.TrainSourceRecipe,
    )


@hookimpl
def ptl_register_commands(app: Any) -> None:
    from ptl_generators import commands

    commands.add(app)
