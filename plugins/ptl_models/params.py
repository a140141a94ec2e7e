"""Parameter schemas of the built-in models (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, model_validator

from ptl_cli.schema import Params


class ConvParams(Params):
    bias: bool = Field(True, description="zero-initialized biases (the paper's Conv nets have them)")


class ResNetParams(Params):
    pass


class WideResNetParams(Params):
    bn_momentum: float = Field(0.001, gt=0, le=1, description="BatchNorm momentum (FixMatch uses 0.001)")
    leaky_slope: float = Field(0.1, ge=0, description="LeakyReLU slope")
    dropout: float = Field(0.0, ge=0, lt=1)


class TorchvisionParams(Params):
    weights: str | None = Field(
        None, description="torchvision weights name (e.g. DEFAULT); downloaded and cached when online"
    )
    stem: Literal["keep", "cifar"] = Field(
        "keep",
        description="'cifar' replaces a ResNet's 7×7/stride-2 stem and max-pool by a 3×3/stride-1 conv",
    )

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> TorchvisionParams:
        """``torchvision:NAME``, its weights, stem and width factor, checked when a recipe is read
        (the name and width come as context): a typo fails ``--dry-run``, without torch."""
        context = info.context or {}
        if str(context.get("name", "")).startswith("torchvision:"):
            from ptl_models.tv_catalog import model_problem

            problem = model_problem(context["name"], self.weights, context.get("width"), self.stem)
            if problem:
                raise ValueError(problem)
        return self


class TimmParams(Params):
    pretrained: bool = Field(
        False, description="timm's pretrained weights (Hugging Face cache, or downloaded when online)"
    )
    stem: Literal["keep", "small"] = Field(
        "keep",
        description="'small': stride 1 in the first conv and no stem max-pool (32×32/28×28 inputs)",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="more timm.create_model arguments, e.g. {img_size = 32, patch_size = 4} for a ViT",
    )

    @model_validator(mode="after")
    def _known(self, info: ValidationInfo) -> TimmParams:
        """``timm:NAME`` and the width factor, checked when a recipe is read, without importing
        timm or torch (a name scan of the installed package): a typo fails ``--dry-run``."""
        context = info.context or {}
        if str(context.get("name", "")).startswith("timm:"):
            from ptl_models.timm_catalog import model_problem

            problem = model_problem(context["name"], context.get("width"))
            if problem:
                raise ValueError(problem)
        return self
