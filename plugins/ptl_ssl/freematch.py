"""FreeMatch (Wang et al. 2023): self-adaptive thresholds and a self-adaptive fairness loss.

Three exponential moving averages (decay ``m = 0.999``) of the weak-view predictions
``q = softmax(f(weak(x_u)))`` of every unlabeled batch make up the state:

* ``time_p``, the global threshold: the EMA of the batch's mean confidence ``mean max q``
  (or of its 0.8 quantile with ``use_quantile``), starting at ``1/K``;
* ``p_model``, the local (class-wise) one: the EMA of the batch's mean ``q``, starting uniform;
* ``label_hist``: the EMA of the histogram of ``argmax q``, starting uniform.

A sample predicted as class ``c`` counts when ``max q >= time_p * p_model[c] / max p_model``.
The loss is ``CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ mask * CE(argmax q, f(strong(x_u))) ]
+ lambda_e * L_f``, where the fairness term ``L_f = sum_c a_c log b_c`` compares the model's
class distribution ``a = SumNorm(p_model / label_hist)`` with the masked strong-view batch's
``b = SumNorm(mean_masked softmax(f(strong)) / hist_masked)`` (``hist`` the histogram of the
masked samples' strong-view predictions; classes with no samples get weight 0), and is 0 when
no sample passes. As in USB, the EMAs take in the current batch before its mask is computed.

Under ``torchrun`` the EMAs are updated from the predictions of the global batch (gathered
from every rank), so every rank holds the same thresholds; the fairness term, as USB's, is
computed on each rank's share. ``tests/ssl/test_reference_freematch.py`` checks several steps
against USB's ``FreeMatch.train_step``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import TensorState, joint_logits, loss_logs, masked_cross_entropy


def _sum_norm_ratio(p: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """``SumNorm(p / hist)``, where a class with an empty histogram bin gets weight 0."""
    scale = torch.where(hist > 0, 1.0 / hist, torch.zeros_like(hist)).detach()
    weighted = p * scale
    return weighted / weighted.sum(dim=-1, keepdim=True)


def fairness_loss(
    mask: torch.Tensor, logits_strong: torch.Tensor, p_model: torch.Tensor, label_hist: torch.Tensor
) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness term over the masked samples (0 when none is masked).

    Weighted by the mask rather than indexed by it, so no host synchronization is needed.
    """
    num_classes = logits_strong.shape[1]
    probs = logits_strong.float().softmax(dim=-1)
    weights = mask.float()
    count = weights.sum()
    hist = torch.zeros(num_classes, device=probs.device).index_add_(0, probs.argmax(dim=-1), weights)
    hist = hist / count.clamp_min(1.0)
    mean_probs = (probs * weights[:, None]).sum(dim=0) / count.clamp_min(1.0)
    model_side = _sum_norm_ratio(p_model.reshape(1, -1), label_hist.reshape(1, -1))
    batch_side = _sum_norm_ratio(mean_probs.reshape(1, -1), hist.reshape(1, -1))
    loss = (model_side * torch.log(batch_side + 1e-12)).sum(dim=1).mean()
    return torch.where(count > 0, loss, torch.zeros_like(loss))


class FreeMatch(TensorState):
    """FreeMatch's loss and its EMA thresholds."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "p_model": torch.float32,
        "label_hist": torch.float32,
        "time_p": torch.float32,
    }

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.0,
        lambda_e: float = 0.01,
        ema_decay: float = 0.999,
        use_quantile: bool = False,
        clip_thresh: bool = False,
    ) -> None:
        self.num_classes = num_classes
        self.lambda_u = lambda_u
        self.lambda_e = lambda_e
        self.ema_decay = ema_decay
        self.use_quantile = use_quantile
        self.clip_thresh = clip_thresh
        self.p_model = torch.full((num_classes,), 1.0 / num_classes)
        self.label_hist = torch.full((num_classes,), 1.0 / num_classes)
        self.time_p = self.p_model.mean()

    @torch.no_grad()
    def _update(self, probs: torch.Tensor) -> None:
        """Take the global batch's weak-view predictions into the three EMAs."""
        probs = gather_global_batch(probs)
        m = self.ema_decay
        confidence, labels = probs.max(dim=-1)
        batch_p = torch.quantile(confidence, 0.8) if self.use_quantile else confidence.mean()
        self.time_p = self.time_p * m + (1 - m) * batch_p
        if self.clip_thresh:
            self.time_p = self.time_p.clamp(0.0, 0.95)
        self.p_model = self.p_model * m + (1 - m) * probs.mean(dim=0)
        hist = torch.zeros_like(self.p_model).index_add_(0, labels, torch.ones_like(confidence))
        self.label_hist = self.label_hist * m + (1 - m) * (hist / hist.sum())

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
            model, labeled, unlabeled, self.num_classes, "FreeMatch"
        )
        self._follow(logits_weak.device)

        probs = torch.softmax(logits_weak.detach().float(), dim=-1)
        self._update(probs)
        confidence, labels = probs.max(dim=-1)
        local = self.p_model / self.p_model.max()
        mask = (confidence >= self.time_p * local[labels]).float()

        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = masked_cross_entropy(logits_strong, labels, mask)
        loss_f = fairness_loss(mask, logits_strong, self.p_model, self.label_hist)
        loss = loss_x + self.lambda_u * loss_u + self.lambda_e * loss_f
        logs = loss_logs(
            loss_x,
            loss_u,
            loss_fair=loss_f.detach(),
            mask_ratio=mask.mean(),
            threshold=self.time_p.detach().clone(),
        )
        return loss, logs
