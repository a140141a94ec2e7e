"""FlexMatch (Zhang et al. 2021): FixMatch with class-wise thresholds that follow each class's
learning status (curriculum pseudo labeling).

Every unlabeled sample keeps the last class it was predicted as with confidence ``>= tau`` (its
``selected_label``, -1 until then): one entry per sample of the unlabeled set, which is why the
algorithm asks ptl for ``num_unlabeled`` and each batch's ``unlabeled_index``. The learning
effect of class ``c`` is ``sigma_c = #{selected_label == c}``, normalized as

``beta_c = sigma_c / max(max_k sigma_k, N - sum_k sigma_k)``  (the paper's threshold warm-up)

or ``sigma_c / max_k sigma_k`` without warm-up, and a sample predicted as ``c`` counts when its
confidence reaches ``tau * M(beta_c)`` with the convex mapping ``M(x) = x / (2 - x)``. With
warm-up, the unused samples dominate the denominator early on, so thresholds start near 0 and
rise as the model commits to pseudo labels. As in USB (``FlexMatchThresholdingHook``), a step's
mask uses the thresholds of the steps before it, then the batch updates ``selected_label``, and
the thresholds are only recomputed while some class (or "unused") is short of all N samples.

``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ mask * CE(argmax q, f(strong(x_u))) ]`` with
``q = softmax(f(weak(x_u)))`` (hard pseudo labels: USB's default). Under ``torchrun`` the
indices and predictions are gathered from every rank before the update
(:func:`ptl_cli.engine.distributed.gather_global_batch`), so every rank holds the state one
process would. ``tests/ssl/test_reference_flexmatch.py`` checks several steps against USB's.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import TensorState, joint_logits, loss_logs, masked_cross_entropy


def last_selected(index: torch.Tensor, selected: torch.Tensor, size: int) -> torch.Tensor:
    """For each of ``size`` samples, the batch position of its last selected occurrence, or -1.

    A batch straddling two epochs of the sampler can hold a sample twice; writing both updates
    with one scatter is nondeterministic on CUDA, so the later one (as a sequential loop would
    leave it) is chosen explicitly. Fixed shapes throughout: no host synchronization.
    """
    positions = torch.arange(index.numel(), device=index.device)
    positions = torch.where(selected, positions, torch.full_like(positions, -1))
    last = torch.full((size,), -1, dtype=torch.long, device=index.device)
    return last.scatter_reduce_(0, index, positions, reduce="amax")


class FlexMatch(TensorState):
    """FlexMatch's loss and the per-sample pseudo labels behind its class-wise thresholds."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "selected_label": torch.long,
        "classwise_acc": torch.float32,
    }

    def __init__(
        self,
        num_classes: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        thresh_warmup: bool = True,
        *,
        num_unlabeled: int,
    ) -> None:
        if num_unlabeled < 1:
            raise ValueError(f"FlexMatch needs unlabeled data, got num_unlabeled={num_unlabeled}")
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.thresh_warmup = thresh_warmup
        self.num_unlabeled = num_unlabeled
        self.selected_label = torch.full((num_unlabeled,), -1, dtype=torch.long)
        self.classwise_acc = torch.zeros(num_classes)

    def learning_effects(self) -> torch.Tensor:
        """``beta_c`` from ``selected_label``, or the current values when the update is skipped
        (every sample unused, or all in one class): USB's rule, without a host sync."""
        counts = torch.zeros(self.num_classes + 1, dtype=torch.long, device=self.selected_label.device)
        counts.index_add_(0, self.selected_label + 1, torch.ones_like(self.selected_label))
        used = counts[1:]
        denominator = counts.max() if self.thresh_warmup else used.max()
        # float32 division of counts below 2**24 is correctly rounded, hence equal to USB's
        # float64 quotient stored in float32 (double rounding is innocuous for 53 >= 2*24 + 2)
        beta = used.float() / denominator.float()
        return torch.where(counts.max() < self.num_unlabeled, beta, self.classwise_acc)

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
        *,
        unlabeled_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if unlabeled_index is None:
            raise ValueError("FlexMatch needs the unlabeled samples' indices (unlabeled_index=...)")
        logits_x, logits_weak, logits_strong = joint_logits(
            model, labeled, unlabeled, self.num_classes, "FlexMatch"
        )
        device = logits_weak.device
        self._follow(device)

        confidence, labels = torch.softmax(logits_weak.detach().float(), dim=1).max(dim=1)
        beta = self.classwise_acc[labels]
        mask = (confidence >= self.threshold * (beta / (2.0 - beta))).float()
        self._update(unlabeled_index.to(device), labels, confidence >= self.threshold)

        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = masked_cross_entropy(logits_strong, labels, mask)
        loss = loss_x + self.lambda_u * loss_u
        return loss, loss_logs(loss_x, loss_u, mask_ratio=mask.mean())

    @torch.no_grad()
    def _update(self, index: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor) -> None:
        """Record the confident predictions of the global batch, then recompute ``beta``."""
        index, labels, selected = (gather_global_batch(t) for t in (index, labels, selected))
        last = last_selected(index, selected, self.num_unlabeled)
        self.selected_label = torch.where(last >= 0, labels[last.clamp_min(0)], self.selected_label)
        self.classwise_acc = self.learning_effects()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved state, refused when it was recorded for an unlabeled set of another size."""
        selected = torch.as_tensor(state["selected_label"], dtype=torch.long)
        if selected.shape != (self.num_unlabeled,):
            raise ValueError(
                f"FlexMatch state holds {selected.numel()} samples; this unlabeled set has "
                f"{self.num_unlabeled}"
            )
        super().load_state_dict(state)
