"""Parameter schemas of the text-conditioned sources: ``stable-diffusion`` and ``clip``.

Pydantic only (cheap to import): the class list and the prompt templates are checked when a
recipe is read, so a typo in a template or a missing class file fails ``--dry-run``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ptl_cli.schema import Params

CLASSES_HELP = (
    "source classes: 'imagenet' (the 1000 ImageNet names in torchvision's order), a text file "
    "with one name per line, or a list of names"
)
TEMPLATES_HELP = "prompt templates with {name}; a class's embedding is the average over them"
SCHEDULERS = ("default", "ddim", "euler", "euler-ancestral", "dpm-solver++", "pndm", "lcm")


def _classes_field() -> Any:
    return Field("imagenet", description=CLASSES_HELP)


def _templates_field() -> Any:
    return Field(default_factory=lambda: ["a photo of a {name}."], description=TEMPLATES_HELP)


class _Prompted(Params):
    """The checks of ``classes`` and ``templates`` (the fields sit in each schema after ``weights``,
    so listings show the weights first)."""

    @field_validator("classes", check_fields=False)
    @classmethod
    def _classes(cls, value: str | list[str]) -> str | list[str]:
        from ptl_generators.prompts import classes_problem

        problem = classes_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("templates", check_fields=False)
    @classmethod
    def _templates(cls, value: list[str]) -> list[str]:
        from ptl_generators.prompts import template_problem

        problem = template_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class StableDiffusionParams(_Prompted):
    weights: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="a diffusers text-to-image pipeline directory or hub id (SD 1.x/2.x, SDXL, SD-Turbo)",
    )
    classes: str | list[str] = _classes_field()
    templates: list[str] = _templates_field()
    negative_prompt: str = Field("", description="the unconditional prompt of classifier-free guidance")
    steps: int = Field(25, ge=1, le=1000, description="sampling steps (SD-Turbo: 1-4)")
    guidance_scale: float = Field(7.5, ge=0.0, description="classifier-free guidance; <= 1 turns it off")
    scheduler: Literal[SCHEDULERS] = Field(  # type: ignore[valid-type]
        "default", description="'default' = the pipeline's own; dpm-solver++ for few steps"
    )
    timestep_spacing: Literal["default", "leading", "trailing", "linspace"] = Field(
        "default", description="'trailing' for few-step sampling; 'default' = the scheduler config's"
    )
    eta: float = Field(0.0, ge=0.0, le=1.0, description="DDIM eta (schedulers that take one)")
    image_size: int | None = Field(
        None, ge=8, description="generated side in pixels (a multiple of 8); default: the model's"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto = float16 on CUDA, else float32"
    )


class ClipClassifierParams(_Prompted):
    weights: str = Field(
        "openai/clip-vit-base-patch32", description="a transformers CLIP directory or hub id"
    )
    classes: str | list[str] = _classes_field()
    templates: list[str] = _templates_field()
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="auto = float16 on CUDA, else float32"
    )
