"""Class conditioning shared by every generator: indices or probability rows -> probability rows."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ptl_cli.engine.compute import host_to_device
from ptl_cli.errors import UserError


def as_probs(y: torch.Tensor, num_classes: int, device: torch.device | str) -> torch.Tensor:
    """``(B,)`` class indices become one-hot rows; ``(B, K)`` float rows are checked and kept.

    Probability rows are not renormalized: a caller that passes something else should learn so.
    """
    y = torch.as_tensor(y)
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) and y.ndim == 1:
        if y.device.type == "cpu":
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise UserError(f"class indices must be in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
            y = host_to_device(y, device)
        else:  # on an accelerator the check runs there: reading min/max back would stall the host
            in_range = ((y >= 0) & (y < num_classes)).all()
            torch._assert_async(in_range, f"class indices must be in 0..{num_classes - 1}")
        return F.one_hot(y.long().to(device), num_classes).float()
    if y.is_floating_point() and y.ndim == 2:
        if y.shape[1] != num_classes:
            raise UserError(
                f"probability rows must have {num_classes} columns (the classes), got {y.shape[1]}"
            )
        return y.to(device=device, dtype=torch.float32)
    raise UserError(
        f"y must be class indices (B,) or probabilities (B, {num_classes}), got {y.dtype} {tuple(y.shape)}"
    )


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet category names (shipped with torchvision: no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def default_class_names(num_classes: int, names: Sequence[str] | None = None) -> tuple[str, ...]:
    if names and len(names) == num_classes:
        return tuple(str(n) for n in names)
    if num_classes == 1000:
        return imagenet_class_names()
    return tuple(f"class {i}" for i in range(num_classes))
