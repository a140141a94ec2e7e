"""DeFixMatch (Schmutz et al. 2022): FixMatch debiased by the same consistency term measured on
labeled data, where it should not be needed.

One forward pass over the labeled weak and strong views and the unlabeled weak and strong
views. With ``q_u = softmax(f(weak(x_u)))`` and ``q_l = softmax(f(weak(x_l)))`` (no gradient),

``L = (CE(f(weak(x_l)), y_l) + CE(f(strong(x_l)), y_l)) / 2``
``    + lambda_u * ( mean_u[ 1(max q_u >= tau) CE(argmax q_u, f(strong(x_u))) ]``
``                 - mean_l[ 1(max q_l >= tau) CE(argmax q_l, f(strong(x_l))) ] )``:

the second term (the "anti" term) removes the bias that confirmation on pseudo labels adds.
With ``hard_label = false`` the targets are ``q`` themselves (USB's soft path never applies its
``T``). Equal to USB's ``DeFixMatch.train_step`` (``tests/ssl/test_reference_usb_family.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, check_logits, forward_split, loss_logs, view
from ptl_ssl.softmatch import weighted_cross_entropy


class DeFixMatch(Stateless):
    """DeFixMatch's loss; one forward pass over both views of both batches."""

    labeled_views = ("weak", "strong")
    unlabeled_views = ("weak", "strong")

    def __init__(
        self, num_classes: int, threshold: float = 0.95, lambda_u: float = 1.0, hard_label: bool = True
    ) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.hard_label = hard_label

    def _targets(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (hard or soft) and the confidence mask of a weak view's logits."""
        probs = torch.softmax(logits.detach().float(), dim=-1)
        confidence, labels = probs.max(dim=-1)
        return (labels if self.hard_label else probs), (confidence >= self.threshold).float()

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        name = "DeFixMatch"
        batches = (
            view(labeled, "weak", name, "labeled"),
            view(labeled, "strong", name, "labeled"),
            view(unlabeled, "weak", name, "unlabeled"),
            view(unlabeled, "strong", name, "unlabeled"),
        )
        logits_x, logits_xs, logits_weak, logits_strong = forward_split(model, *batches)
        check_logits(logits_x, self.num_classes, name)

        loss_x = (F.cross_entropy(logits_x, targets) + F.cross_entropy(logits_xs, targets)) / 2
        pseudo, mask = self._targets(logits_weak)
        anti, mask_l = self._targets(logits_x)
        loss_u = weighted_cross_entropy(logits_strong, pseudo, mask)
        loss_anti = weighted_cross_entropy(logits_xs, anti, mask_l)
        loss = loss_x + self.lambda_u * (loss_u - loss_anti)
        return loss, loss_logs(
            loss_x,
            loss_u,
            loss_anti=loss_anti.detach(),
            mask_ratio=mask.mean(),
            mask_ratio_labeled=mask_l.mean(),
        )
