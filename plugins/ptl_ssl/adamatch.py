"""AdaMatch (Berthelot et al. 2022), as USB runs it: FixMatch with distribution alignment and a
threshold relative to the model's confidence on the labeled batch.

The weak-view predictions ``q = softmax(f(weak(x_u)))`` are aligned (:mod:`ptl_ssl.distalign`)
with ``p_model``, an EMA (``m = 0.999``) of the mean unlabeled prediction, towards ``p_target``,
an EMA of the mean labeled prediction (starting uniform). A sample counts when its aligned
confidence reaches ``tau * mean_l max softmax(f(weak(x_l)))`` (relative confidence thresholding),
and ``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ mask * CE(argmax q_aligned, f(strong(x_u))) ]``
(with ``hard_label = false`` the targets are the aligned probabilities themselves: USB's soft
path, which never applies its ``T``; ptl has no temperature here).

Like USB's ``AdaMatch``, and unlike the paper, there is no random logit interpolation, no
separate BatchNorm pass for the source batch and no ramp-up of ``lambda_u``: ptl follows USB,
the benchmark users compare with. Under ``torchrun`` the priors and the relative threshold come
from the global batch, so 2 ranks compute what 1 process would (USB's threshold is each rank's
own: the one deliberate difference, which only shows with more than one process).
``tests/ssl/test_reference_usb_family.py`` checks several steps against USB's ``train_step``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import TensorState, joint_logits, loss_logs
from ptl_ssl.distalign import align, update_priors
from ptl_ssl.softmatch import weighted_cross_entropy


class AdaMatch(TensorState):
    """AdaMatch's loss and its running class priors."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "p_model": torch.float32,
        "p_model_seen": torch.bool,
        "p_target": torch.float32,
    }

    def __init__(
        self,
        num_classes: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        ema_decay: float = 0.999,
        hard_label: bool = True,
    ) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.ema_decay = ema_decay
        self.hard_label = hard_label
        self.p_model = torch.full((num_classes,), 1.0 / num_classes)
        self.p_model_seen = torch.tensor(False)
        self.p_target = torch.full((num_classes,), 1.0 / num_classes)

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
            model, labeled, unlabeled, self.num_classes, "AdaMatch"
        )
        self._follow(logits_weak.device)
        probs_l = torch.softmax(logits_x.detach().float(), dim=-1)
        probs_u = torch.softmax(logits_weak.detach().float(), dim=-1)
        self.p_model, self.p_model_seen, self.p_target = update_priors(
            self.p_model, self.p_model_seen, self.p_target, probs_u, probs_l, self.ema_decay
        )
        aligned = align(probs_u, self.p_model, self.p_target)
        cutoff = gather_global_batch(probs_l.max(dim=-1).values).mean() * self.threshold
        confidence, labels = aligned.max(dim=-1)
        mask = (confidence >= cutoff).float()

        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = weighted_cross_entropy(logits_strong, labels if self.hard_label else aligned, mask)
        loss = loss_x + self.lambda_u * loss_u
        return loss, loss_logs(loss_x, loss_u, mask_ratio=mask.mean(), threshold=cutoff)
