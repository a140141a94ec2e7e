"""Pseudo-Label (Lee 2013): confident hard predictions become targets for the same view.

``L = CE(f(weak(x_l)), y_l) + w(t) * mean_u[ 1(max p >= tau) * CE(argmax p, f(weak(x_u))) ]``
with ``p = softmax(f(weak(x_u)))`` detached and ``w`` ramping up linearly from 0 to ``lambda_u``
over the first ``rampup_fraction`` of training (USB's ``unsup_warmup``), so early, unreliable
pseudo labels carry little weight. As in USB, the unlabeled batch has its own forward pass, with
BatchNorm's running statistics frozen; ``tests/ssl/test_reference_losses.py`` checks the loss,
gradients and statistics against USB's ``train_step``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import (
    Stateless,
    labeled_then_unlabeled,
    loss_logs,
    masked_cross_entropy,
    pseudo_labels,
    view,
)


def linear_rampup(step: int, rampup_steps: float) -> float:
    """``clip(step / rampup_steps, 0, 1)``; 1 when there is no ramp-up."""
    if rampup_steps <= 0:
        return 1.0
    return min(max(step / rampup_steps, 0.0), 1.0)


class PseudoLabel(Stateless):
    """Pseudo-Label's loss. Two forward passes, as USB's: the labeled weak view, then the
    unlabeled one under :func:`~ptl_ssl.common.frozen_batchnorm`."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak",)

    def __init__(
        self, num_classes: int, threshold: float = 0.95, lambda_u: float = 1.0, rampup_fraction: float = 0.4
    ) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.rampup_fraction = rampup_fraction

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = view(labeled, "weak", "PseudoLabel", "labeled")
        u = view(unlabeled, "weak", "PseudoLabel", "unlabeled")
        logits_x, logits_u = labeled_then_unlabeled(model, x, u, self.num_classes, "PseudoLabel")
        loss_x = F.cross_entropy(logits_x, targets)
        labels, mask = pseudo_labels(logits_u, self.threshold)
        loss_u = masked_cross_entropy(logits_u, labels, mask)
        weight = self.lambda_u * linear_rampup(step, self.rampup_fraction * total_steps)
        loss = loss_x + weight * loss_u
        return loss, loss_logs(
            loss_x, loss_u, mask_ratio=mask.mean(), weight_u=loss_u.new_full((), weight).detach()
        )
