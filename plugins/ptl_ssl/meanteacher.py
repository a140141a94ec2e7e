"""Mean Teacher (Tarvainen & Valpola 2017): the student matches an EMA of itself.

``L = CE(f(weak(x_l)), y_l) + w(t) * MSE(softmax(f(v1)), softmax(f_ema(v2)))``, where v1 and v2
are two independent weak views of ``x_u`` and ``f_ema`` is the teacher, whose weights follow
``teacher <- decay * teacher + (1 - decay) * student`` after every optimizer step. The weight
ramps up as ``lambda_u * exp(-5 (1 - t)^2)``, t going from 0 to 1 over the first
``rampup_fraction`` of training (the paper's sigmoid-shaped schedule, where USB ramps up
linearly; max 50 as in USB). As in USB, the labeled batch alone updates BatchNorm's running
statistics: the student's unlabeled pass runs with them frozen. Given the same two views, the
loss equals USB's ``train_step`` after the ramp-up (``tests/ssl/test_reference_losses.py``).

The algorithm asks for two independent weak views of the unlabeled batch, ``("weak", "weak")``,
which the training loop hands over as ``"weak"`` (the student's) and ``"weak:1"`` (the teacher's),
drawn in that order (:func:`ptl_cli.data.views.make_views`).

The teacher is a deep copy of the student made on the first ``loss`` call (so it is built on
the right device, after any wrapping), with its own parameters and buffers; it runs in the
student's train/eval mode, under ``no_grad``. Its weights and buffers are the algorithm's
state: a resumed run continues with exactly the same teacher.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import EMATeacher, labeled_then_unlabeled, loss_logs, view


def sigmoid_rampup(step: int, rampup_steps: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(step / rampup_steps, 0, 1)``; 1 without ramp-up."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step / rampup_steps, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher:
    """Mean Teacher's loss and the EMA teacher it maintains."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "weak")  # keys "weak" (student) and "weak:1" (teacher)

    def __init__(
        self, num_classes: int, ema_decay: float = 0.999, lambda_u: float = 50.0, rampup_fraction: float = 0.4
    ) -> None:
        self.num_classes = num_classes
        self.ema_decay = ema_decay
        self.lambda_u = lambda_u
        self.rampup_fraction = rampup_fraction
        self._ema = EMATeacher(ema_decay, "MeanTeacher")

    @property
    def teacher(self) -> nn.Module | None:
        """The EMA teacher, once the first ``loss`` has copied it from the student."""
        return self._ema.model

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        teacher = self._ema.of(model)  # before the student's forward touches its BN buffers
        x = view(labeled, "weak", "MeanTeacher", "labeled")
        u_student = view(unlabeled, "weak", "MeanTeacher", "unlabeled")
        u_teacher = view(unlabeled, "weak:1", "MeanTeacher", "unlabeled")
        logits_x, logits_u = labeled_then_unlabeled(model, x, u_student, self.num_classes, "MeanTeacher")
        teacher.train(model.training)
        with torch.no_grad():
            logits_teacher = teacher(u_teacher)

        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = F.mse_loss(
            torch.softmax(logits_u.float(), dim=1), torch.softmax(logits_teacher.float(), dim=1)
        )
        weight = self.lambda_u * sigmoid_rampup(step, self.rampup_fraction * total_steps)
        loss = loss_x + weight * loss_u
        return loss, loss_logs(loss_x, loss_u, weight_u=loss_u.new_full((), weight).detach())

    def after_step(self, model: nn.Module, step: int) -> None:
        """Move the teacher's parameters towards the student's (buffers stay the teacher's own)."""
        self._ema.update(model)

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights and buffers (copies), or nothing before the first step."""
        saved = self._ema.state()
        return {} if saved is None else {"teacher": saved}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._ema.load(state.get("teacher"))
