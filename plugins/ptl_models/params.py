"""Parameter schemas of the built-in models (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Literal

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
