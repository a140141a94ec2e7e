"""The supervised baseline ("scratch" in the P-SSL paper): labeled cross-entropy only.

It asks for no unlabeled view, which tells the training loop to skip loading and augmenting
the unlabeled batch altogether; anything passed as ``unlabeled`` is ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, check_logits, view


class Supervised(Stateless):
    """Cross-entropy on the weak view of the labeled batch."""

    labeled_views = ("weak",)
    unlabeled_views: tuple[str, ...] = ()

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(view(labeled, "weak", "supervised", "labeled"))
        check_logits(logits, self.num_classes, "supervised")
        loss = F.cross_entropy(logits, targets)
        return loss, {"loss_x": loss.detach()}
