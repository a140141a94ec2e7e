"""FixMatch with the self-adaptive global threshold of FreeMatch (Wang et al. 2023), as a ptl SSL
algorithm.

``L = CE(f(weak(x_l)), y_l) + lambda_u · mean_u[1(max q ≥ τ_t) · CE(argmax q, f(strong(x_u)))]``
with ``q = softmax(f(weak(x_u)))`` (no gradient) and ``τ_t = ema · τ_{t-1} + (1 - ema) · mean(max q)``,
starting at ``τ_0 = 1 / K`` and averaged over all data-parallel ranks: the threshold follows the
model's confidence instead of a fixed 0.95.
(FreeMatch's class-wise modulation and fairness term are left out.) ``τ`` is state: it is in
:meth:`state_dict`, so a resumed run continues with the same threshold.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def global_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over every data-parallel rank's batch, so all ranks keep the same threshold."""
    import torch.distributed as dist

    mean = values.mean()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(mean)
        mean = mean / dist.get_world_size()
    return mean


class SATFixMatch:
    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")

    def __init__(self, num_classes: int, ema: float = 0.999, lambda_u: float = 1.0) -> None:
        self.num_classes = num_classes
        self.ema = ema
        self.lambda_u = lambda_u
        self.tau = torch.tensor(1.0 / num_classes)

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, u_weak, u_strong = labeled["weak"], unlabeled["weak"], unlabeled["strong"]
        logits = model(torch.cat([x, u_weak, u_strong]))
        logits_x, logits_weak, logits_strong = logits.split([x.shape[0], u_weak.shape[0], u_strong.shape[0]])
        loss_x = F.cross_entropy(logits_x, targets)

        confidence, pseudo = torch.softmax(logits_weak.detach().float(), dim=1).max(dim=1)
        # the threshold stays a tensor on the device: no host sync per step
        batch_confidence = global_mean(confidence)
        self.tau = self.ema * self.tau.to(confidence.device) + (1.0 - self.ema) * batch_confidence
        mask = (confidence >= self.tau).float()
        loss_u = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
        logs = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "mask_ratio": mask.mean(),
            "tau": self.tau,
        }
        return loss_x + self.lambda_u * loss_u, logs

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing to do: the threshold is updated with the batch it applies to, in :meth:`loss`."""

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = state["tau"].clone()
