"""Registration of the built-in models. Factories are imported only when a model is built."""

from __future__ import annotations

from ptl_cli import hookimpl


@hookimpl
def ptl_register_models(register) -> None:
    # Schemas import pydantic: only pay for it when components are listed or built.
    from ptl_models.params import ConvParams, ResNetParams, TimmParams, TorchvisionParams, WideResNetParams

    for depth in (2, 4, 6, 8):
        register(
            f"conv{depth}",
            f"ptl_models.convnets:conv{depth}",
            description=f"Conv-{depth} of the lottery-ticket/edge-popup papers (3×3 convs, max-pool, 3 FC)",
            params=ConvParams,
        )
    for depth in (18, 34):
        register(
            f"resnet{depth}",
            f"ptl_models.resnet:resnet{depth}",
            description=f"CIFAR ResNet-{depth}: 3×3 stem, no max-pool, width factor on the stages",
            params=ResNetParams,
            aliases=(f"cifar-resnet{depth}",),
        )
    register(
        "wrn28",
        "ptl_models.wideresnet:wrn28",
        description="Wide ResNet-28-k (k = width × 2, so width=1 is WRN-28-2 as in FixMatch)",
        params=WideResNetParams,
    )
    register(
        "torchvision:*",
        "ptl_models.tv:build",
        description="any torchvision classifier, e.g. torchvision:resnet50 or torchvision:mobilenet_v3_small",
        params=TorchvisionParams,
    )
    register(
        "timm:*",
        "ptl_models.timm_models:build",
        description="any timm architecture (extra: timm), e.g. timm:resnet50 or timm:vit_tiny_patch16_224",
        params=TimmParams,
    )
