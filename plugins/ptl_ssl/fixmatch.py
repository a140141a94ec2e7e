"""FixMatch (Sohn et al. 2020): confident predictions on a weak view supervise a strong view.

``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ 1(max q >= tau) * CE(argmax q, f(strong(x_u))) ]``
with ``q = softmax(f(weak(x_u)) / T)`` taken without gradient. The mean runs over *all*
unlabeled samples, masked ones included, as in the paper, so the unlabeled term grows as the
model becomes confident. At the default ``T = 1`` this equals USB's hard-label FixMatch
(``tests/ssl/test_reference_losses.py``); USB's hard-label path ignores its ``T``, while here ``T``
scales the logits whose softmax gives the confidence, as in kekmodel's FixMatch-pytorch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import check_logits, forward_split, view


def pseudo_labels(
    logits: torch.Tensor, threshold: float, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard labels ``argmax q`` and the float mask ``max q >= threshold``, ``q = softmax(logits/T)``."""
    probs = torch.softmax(logits.detach().float() / temperature, dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, (confidence >= threshold).float()


class FixMatch:
    """FixMatch's loss; one forward pass over labeled weak, unlabeled weak and strong views."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")

    def __init__(
        self, num_classes: int, threshold: float = 0.95, lambda_u: float = 1.0, temperature: float = 1.0
    ) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.temperature = temperature

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = view(labeled, "weak", "FixMatch", "labeled")
        u_weak = view(unlabeled, "weak", "FixMatch", "unlabeled")
        u_strong = view(unlabeled, "strong", "FixMatch", "unlabeled")
        logits_x, logits_weak, logits_strong = forward_split(model, x, u_weak, u_strong)
        check_logits(logits_x, self.num_classes, "FixMatch")

        loss_x = F.cross_entropy(logits_x, targets)
        labels, mask = pseudo_labels(logits_weak, self.threshold, self.temperature)
        loss_u = (F.cross_entropy(logits_strong, labels, reduction="none") * mask).mean()
        loss = loss_x + self.lambda_u * loss_u
        return loss, {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(), "mask_ratio": mask.mean()}

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing to update: FixMatch keeps no state between steps."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: accepts the empty dict :meth:`state_dict` gives."""
