"""Supervised cross-entropy plus a consistency loss in a projection space.

A projection MLP ``g`` on the network's penultimate features ``h`` maps the weak and the strong
view of each unlabeled image; the loss pulls ``normalize(g(h(strong)))`` towards the
(stop-gradient) ``normalize(g(h(weak)))``: ``2 - 2·cos``, BYOL's form. The head is asked for
with ``heads(feature_dim)``; ptl trains, checkpoints and moves it with the network and drops it
from the exported model. A running mean of the similarity is state (``state_dict``), to show
that resumed runs continue it; it is updated from the global batch
(``gather_global_batch``), so every data-parallel rank holds the same value.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch


class ProjConsistency:
    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")

    def __init__(self, num_classes: int, proj_dim: int = 16, lambda_u: float = 1.0, momentum: float = 0.9):
        self.num_classes = num_classes
        self.proj_dim, self.lambda_u, self.momentum = proj_dim, lambda_u, momentum
        self.similarity = torch.zeros(())

    def heads(self, feature_dim: int) -> dict[str, nn.Module]:
        hidden = max(feature_dim, self.proj_dim)
        return {
            "proj": nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, self.proj_dim))
        }

    def loss(self, model, labeled, targets, unlabeled, step, total_steps):
        b = targets.shape[0]
        x = torch.cat([labeled["weak"], unlabeled["weak"], unlabeled["strong"]])
        out = model(x, with_heads=True)
        loss_x = F.cross_entropy(out["logits"][:b], targets)
        z_weak, z_strong = F.normalize(out["proj"][b:].float(), dim=1).chunk(2)
        cosine = (z_weak.detach() * z_strong).sum(dim=1)
        loss_u = (2 - 2 * cosine).mean()
        with torch.no_grad():  # from the global batch, so every rank keeps the same value
            mean = gather_global_batch(cosine.detach()).mean()
            self.similarity = self.similarity.to(mean.device)
            self.similarity.mul_(self.momentum).add_((1 - self.momentum) * mean)
        logs = {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(), "similarity": self.similarity.clone()}
        return loss_x + self.lambda_u * loss_u, logs

    def after_step(self, model: Any, step: int) -> None:
        """Nothing to do after the optimizer step."""

    def state_dict(self) -> dict[str, Any]:
        return {"similarity": self.similarity.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.similarity = state["similarity"].clone()
