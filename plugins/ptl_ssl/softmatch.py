"""SoftMatch (Chen et al. 2023): a soft, truncated-Gaussian weight on each pseudo label instead
of a hard confidence threshold.

The weak-view predictions ``q = softmax(f(weak(x_u)))`` are first distribution-aligned
(:mod:`ptl_ssl.distalign`: towards the uniform prior, or with ``dist_uniform = false`` towards an
EMA of the labeled predictions). The confidences ``c = max q_aligned`` of the batch update two
EMAs (decay ``m = 0.999``): their mean ``mu`` (starting at ``1/K``) and their unbiased variance
``var`` (starting at 1). A sample then weighs

``w = exp(-min(c - mu, 0)^2 / (2 var / n_sigma^2))``: 1 above the mean, less the further below,

and ``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ w * CE(argmax f(weak(x_u)), f(strong(x_u))) ]``
(hard labels from the unaligned logits, as USB; with ``hard_label = false`` the soft targets
``softmax(f(weak(x_u)) / T)``). As in USB the EMAs take in the current batch before it is weighed.

Under ``torchrun`` the priors and the Gaussian's EMAs are updated from the global batch, so every
rank holds the same state; USB gathers the same predictions. USB's ``per_class`` variant is not
offered: in semilearn 0.3.2 it fails at construction. ``tests/ssl/test_reference_usb_family.py``
checks several steps against USB's ``SoftMatch.train_step`` and its hooks.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import TensorState, joint_logits, loss_logs
from ptl_ssl.distalign import align, update_priors


def soft_targets(logits: torch.Tensor, hard: bool, temperature: float) -> torch.Tensor:
    """Hard labels ``argmax logits`` or soft targets ``softmax(logits / T)``, without gradient."""
    logits = logits.detach().float()
    return logits.argmax(dim=-1) if hard else torch.softmax(logits / temperature, dim=-1)


def weighted_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``mean[ weight * CE(targets, logits) ]`` for hard (class index) or soft (row) targets."""
    if targets.ndim == logits.ndim:
        per_sample = -(targets * F.log_softmax(logits, dim=-1)).sum(dim=1)
    else:
        per_sample = F.cross_entropy(logits, targets, reduction="none")
    return (per_sample * weight).mean()


class SoftMatch(TensorState):
    """SoftMatch's loss, its running class priors and the Gaussian that weighs pseudo labels."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "p_model": torch.float32,
        "p_model_seen": torch.bool,
        "p_target": torch.float32,
        "mu": torch.float32,
        "var": torch.float32,
    }

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.0,
        ema_decay: float = 0.999,
        n_sigma: float = 2.0,
        dist_uniform: bool = True,
        hard_label: bool = True,
        temperature: float = 0.5,
    ) -> None:
        self.num_classes = num_classes
        self.lambda_u = lambda_u
        self.ema_decay = ema_decay
        self.n_sigma = n_sigma
        self.dist_uniform = dist_uniform
        self.hard_label = hard_label
        self.temperature = temperature
        self.p_model = torch.full((num_classes,), 1.0 / num_classes)
        self.p_model_seen = torch.tensor(False)
        self.p_target = torch.full((num_classes,), 1.0 / num_classes)
        self.mu = torch.tensor(1.0 / num_classes)
        self.var = torch.tensor(1.0)

    @torch.no_grad()
    def _weights(self, probs_u: torch.Tensor, probs_l: torch.Tensor) -> torch.Tensor:
        """Align ``probs_u``, take the batch into the state, and weigh each sample."""
        self.p_model, self.p_model_seen, self.p_target = update_priors(
            self.p_model,
            self.p_model_seen,
            self.p_target,
            probs_u,
            None if self.dist_uniform else probs_l,
            self.ema_decay,
        )
        aligned = align(probs_u, self.p_model, self.p_target)
        confidence = aligned.max(dim=-1).values
        every = gather_global_batch(confidence)
        m = self.ema_decay
        self.mu = m * self.mu + (1 - m) * every.mean()
        self.var = m * self.var + (1 - m) * every.var(unbiased=True)
        below = torch.clamp(confidence - self.mu, max=0.0)
        return torch.exp(-(below**2) / (2 * self.var / (self.n_sigma**2)))

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
            model, labeled, unlabeled, self.num_classes, "SoftMatch"
        )
        self._follow(logits_weak.device)
        probs_l = torch.softmax(logits_x.detach().float(), dim=-1)
        probs_u = torch.softmax(logits_weak.detach().float(), dim=-1)
        weight = self._weights(probs_u, probs_l)
        pseudo = soft_targets(logits_weak, self.hard_label, self.temperature)

        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = weighted_cross_entropy(logits_strong, pseudo, weight)
        loss = loss_x + self.lambda_u * loss_u
        return loss, loss_logs(loss_x, loss_u, mask_ratio=weight.mean(), threshold=self.mu.clone())
