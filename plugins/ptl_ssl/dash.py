"""Dash (Xu et al. 2021): unlabeled samples selected by their loss under a threshold that
shrinks as training goes on.

After a supervised warm-up of ``warmup_steps`` steps (labeled cross-entropy only), the threshold
``rho_t = max(C * gamma^-k * rho_init, rho_min)`` holds for ``rho_update_every`` steps at a time
(``k`` counts the updates before, ``t`` the steps since the warm-up); a sample counts when the
cross-entropy of its weak view against its own target is at most ``rho_t``. Targets are soft,
``softmax(f(weak(x_u)) / T)``, until ``rho_t`` reaches ``rho_min``, then hard labels, and

``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ mask * CE(target, f(strong(x_u))) ]``.

Everything equals USB's ``Dash.train_step`` and ``DashThresholdingHook`` after the warm-up
(``tests/ssl/test_reference_usb_family.py``), with two deliberate differences, both because
ptl's algorithms see one training loop and not an evaluation set:

* USB runs the warm-up as extra iterations before training and then restarts its counter; in ptl
  the warm-up is the first ``warmup_steps`` steps of the stage, and ``t`` restarts after it.
* USB's ``rho_init`` is the loss on the evaluation set after the warm-up; ptl's is the labeled
  batch's cross-entropy at the first step after it (the paper's "average loss of the labeled
  examples", estimated on one batch; under ``torchrun`` the global batch, so every rank holds
  the same value). It is the algorithm's state, so resume is exact.

Defaults are USB's: ``warmup_steps = 2048`` and ``rho_update_every = 10240`` (every 10 of its
1024-iteration epochs), meant for schedules of a million steps: a short run sets both.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import TensorState, check_logits, joint_logits, loss_logs, view
from ptl_ssl.softmatch import weighted_cross_entropy


def soft_or_hard_targets(logits: torch.Tensor, hard: torch.Tensor, temperature: float) -> torch.Tensor:
    """Rows of ``softmax(logits / T)``, or one-hot ``argmax`` rows where the 0-dim ``hard`` is
    true: chosen on the device (a one-hot row gives exactly the hard-label cross-entropy)."""
    logits = logits.detach().float()
    one_hot = F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    return torch.where(hard, one_hot, torch.softmax(logits / temperature, dim=-1))


class Dash(TensorState):
    """Dash's loss and the initial loss level its shrinking threshold starts from."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {"rho_init": torch.float32, "rho_init_set": torch.bool}

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.0,
        temperature: float = 0.5,
        gamma: float = 1.27,
        c: float = 1.0001,
        rho_min: float = 0.05,
        warmup_steps: int = 2048,
        rho_update_every: int = 10240,
    ) -> None:
        self.num_classes = num_classes
        self.lambda_u = lambda_u
        self.temperature = temperature
        self.gamma = gamma
        self.c = c
        self.rho_min = rho_min
        self.warmup_steps = warmup_steps
        self.rho_update_every = rho_update_every
        self.rho_init = torch.tensor(0.0)
        self.rho_init_set = torch.tensor(False)

    def rho(self, step: int) -> torch.Tensor:
        """The threshold at ``step`` (after the warm-up), a 0-dim tensor on the state's device."""
        updates = (step - self.warmup_steps) // self.rho_update_every
        return torch.clamp(self.c * self.gamma**-updates * self.rho_init, min=self.rho_min)

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if step < self.warmup_steps:
            return self._warmup_loss(model, labeled, targets)
        logits_x, logits_weak, logits_strong = joint_logits(
            model, labeled, unlabeled, self.num_classes, "Dash"
        )
        self._follow(logits_weak.device)
        per_sample = F.cross_entropy(logits_x, targets, reduction="none")
        loss_x = per_sample.mean()
        global_loss = gather_global_batch(per_sample.detach().float()).mean()  # every rank's rho_init
        self.rho_init = torch.where(self.rho_init_set, self.rho_init, global_loss)
        self.rho_init_set = torch.ones_like(self.rho_init_set)

        rho = self.rho(step)
        pseudo = soft_or_hard_targets(logits_weak, rho == self.rho_min, self.temperature)
        weak_loss = -(pseudo * F.log_softmax(logits_weak.detach().float(), dim=-1)).sum(dim=1)
        mask = (weak_loss <= rho).float()
        loss_u = weighted_cross_entropy(logits_strong, pseudo, mask)
        loss = loss_x + self.lambda_u * loss_u
        return loss, loss_logs(loss_x, loss_u, mask_ratio=mask.mean(), threshold=rho)

    def _warmup_loss(
        self, model: nn.Module, labeled: dict[str, torch.Tensor], targets: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The supervised warm-up: one pass over the labeled batch, the unlabeled one unused."""
        logits_x = model(view(labeled, "weak", "Dash", "labeled"))
        check_logits(logits_x, self.num_classes, "Dash")
        loss_x = F.cross_entropy(logits_x, targets)
        zero = torch.zeros((), device=loss_x.device)
        return loss_x, loss_logs(loss_x, zero, mask_ratio=zero, threshold=zero)
