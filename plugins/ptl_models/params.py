"""Parameter schemas of the built-in models (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
