"""Pi-Model (Laine & Aila 2017; Rasmus et al. 2015): two weak views of an unlabeled sample
should get the same prediction.

``L = CE(f(weak(x_l)), y_l) + w(t) * mean_u[ MSE(softmax(f(v2)), softmax(f(v1))) ]``, where v1
and v2 are two independent weak views of ``x_u`` and the first prediction is taken without
gradient; the MSE is averaged over classes. ``w(t) = lambda_u * clip(t / (rampup_fraction * T), 0, 1)``
ramps up linearly, as USB's (``lambda_u = 10``, USB's configs, ``rampup_fraction = 0.4``). As in
USB, the labeled batch alone updates BatchNorm's running statistics: the two unlabeled passes
(one each, so each view is normalized with its own batch statistics) run with them frozen.

The algorithm asks for two weak views, ``("weak", "weak")``, which the training loop hands over as
``"weak"`` and ``"weak:1"`` (USB's dataset gives Pi-Model a second weak view as its ``x_ulb_s``).
Equal to USB's ``PiModel.train_step`` (``tests/ssl/test_reference_usb_family.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, check_logits, frozen_batchnorm, loss_logs, view
from ptl_ssl.pseudolabel import linear_rampup


class PiModel(Stateless):
    """The Pi-Model's loss: three passes, the unlabeled two under frozen BatchNorm statistics."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "weak")  # keys "weak" (the target) and "weak:1" (the student)

    def __init__(self, num_classes: int, lambda_u: float = 10.0, rampup_fraction: float = 0.4) -> None:
        self.num_classes = num_classes
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
        x = view(labeled, "weak", "PiModel", "labeled")
        first = view(unlabeled, "weak", "PiModel", "unlabeled")
        second = view(unlabeled, "weak:1", "PiModel", "unlabeled")
        logits_x = model(x)
        check_logits(logits_x, self.num_classes, "PiModel")
        with frozen_batchnorm(model):
            logits_first = model(first)
            logits_second = model(second)
        target = torch.softmax(logits_first.detach().float(), dim=-1)
        loss_u = (
            F.mse_loss(torch.softmax(logits_second.float(), dim=-1), target, reduction="none")
            .mean(dim=1)
            .mean()
        )
        loss_x = F.cross_entropy(logits_x, targets)
        weight = self.lambda_u * linear_rampup(step, self.rampup_fraction * total_steps)
        loss = loss_x + weight * loss_u
        return loss, loss_logs(loss_x, loss_u, weight_u=loss_u.new_full((), weight).detach())
