"""FixMatch (Sohn et al. 2020): confident predictions on a weak view supervise a strong view.

``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ 1(max q >= tau) * CE(argmax q, f(strong(x_u))) ]``
with ``q = softmax(f(weak(x_u)) / T)`` taken without gradient. The mean runs over *all*
unlabeled samples, masked ones included, as in the paper, so the unlabeled term grows as the
model becomes confident. At the default ``T = 1`` this equals USB's hard-label FixMatch
(``tests/ssl/test_reference_losses.py``); USB's hard-label path ignores its ``T``, while here ``T``
scales the logits whose softmax gives the confidence, as in kekmodel's FixMatch-pytorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, joint_logits, loss_logs, masked_cross_entropy, pseudo_labels

__all__ = ["FixMatch", "pseudo_labels"]


class FixMatch(Stateless):
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
        logits_x, logits_weak, logits_strong = joint_logits(
            model, labeled, unlabeled, self.num_classes, "FixMatch"
        )
        loss_x = F.cross_entropy(logits_x, targets)
        labels, mask = pseudo_labels(logits_weak, self.threshold, self.temperature)
        loss_u = masked_cross_entropy(logits_strong, labels, mask)
        loss = loss_x + self.lambda_u * loss_u
        return loss, loss_logs(loss_x, loss_u, mask_ratio=mask.mean())
