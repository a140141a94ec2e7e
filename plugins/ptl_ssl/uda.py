"""UDA (Xie et al. 2020): sharpened weak-view predictions are soft targets for the strong view.

``targets = softmax(f(weak(x_u)) / T)`` (T = 0.4, no gradient), kept where the *unsharpened*
max probability reaches the threshold (0.8); the consistency term is the soft cross-entropy
``-sum targets * log_softmax(f(strong(x_u)))`` averaged over all unlabeled samples. It differs
from KL(targets || prediction) by the targets' entropy, a constant for the gradient.
No training-signal annealing (USB's default). Unlike USB, the targets are sharpened, as the
paper has it: USB's UDA asks its pseudo-labeling hook for soft labels of probabilities already
computed (``softmax=False``), which returns them as given, so its ``T`` never acts. With
``temperature=1`` this is USB's UDA (``tests/ssl/test_reference_losses.py`` checks both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, joint_logits, loss_logs


def soft_targets(
    logits: torch.Tensor, temperature: float, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sharpened targets ``softmax(logits / T)`` and the float mask ``max softmax(logits) >= threshold``."""
    logits = logits.detach().float()
    mask = (torch.softmax(logits, dim=1).amax(dim=1) >= threshold).float()
    return torch.softmax(logits / temperature, dim=1), mask


class UDA(Stateless):
    """UDA's loss; one forward pass over labeled weak, unlabeled weak and strong views."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")

    def __init__(
        self, num_classes: int, temperature: float = 0.4, threshold: float = 0.8, lambda_u: float = 1.0
    ) -> None:
        self.num_classes = num_classes
        self.temperature = temperature
        self.threshold = threshold
        self.lambda_u = lambda_u

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
            model, labeled, unlabeled, self.num_classes, "UDA"
        )
        loss_x = F.cross_entropy(logits_x, targets)
        soft, mask = soft_targets(logits_weak, self.temperature, self.threshold)
        per_sample = -(soft * F.log_softmax(logits_strong.float(), dim=1)).sum(dim=1)
        loss_u = (per_sample * mask).mean()
        loss = loss_x + self.lambda_u * loss_u
        return loss, loss_logs(loss_x, loss_u, mask_ratio=mask.mean())
