"""CRMatch (Fan et al., IJCV 2023; arXiv 2112.05825), as USB runs it: FixMatch plus a feature
consistency term between the weak and the strong view and a rotation-prediction task.

One forward pass over ``[x_l, weak(u), strong(u), rotated]`` (BatchNorm sees the whole batch, as
in USB's default concatenated pass) gives the logits and two heads on the penultimate features
(the algorithm's ``heads``: :mod:`ptl_cli.engine.heads`, so any target network works): ``ds``, a
linear map of the features, and ``rotation``, a two-layer MLP over four quarter turns. With
``y = argmax f(weak(u))`` and ``m = 1(max softmax f(weak(u)) >= threshold)``:

``L = CE(f(x_l), y_l) + mean[m·CE(f(strong(u)), y)] + mean[m·max(0, cos(ds(strong), ds(weak)))]
+ lambda_rot·CE(rotation(rotated), r)``,

where ``rotated`` holds B unlabeled images (B the labeled batch size) in all four quarter turns
(``r`` = 0, 1, 2, 3). The cosine term is USB's ``cosine_embedding_loss`` with target −1: it only
acts on pairs whose ``ds`` outputs point the same way. Gradients flow through both views of it, as
in USB's concatenated pass. Defaults are USB's (``threshold = 0.95``, rotation weight 1).

Equal to USB's ``CRMatch.train_step`` on the same inputs (``tests/ssl/test_reference_crmatch.py``),
with these deliberate differences:

* the ``ds`` head maps the pooled penultimate features (``feature_dim -> feature_dim``), USB's
  branch for ViT/BERT; its WRN/ResNet branch flattens the feature map *before* pooling (8×8×C on
  CIFAR), whose shape only a network written for it exposes;
* the rotated images are the first B samples of the step's unlabeled batch in a further
  independent weak view (``"weak:1"``); USB draws them from a second unlabeled loader with the
  labeled set's transform;
* ``lambda_rot`` weighs the rotation loss; USB's ``rot_loss_ratio`` only switches it on (any
  positive value adds it with weight 1): at the default 1.0 the two agree. At ``lambda_rot = 0``
  the rotated images are left out (as USB without rotation) and the head stays in the graph at
  weight 0, so that DistributedDataParallel sees a gradient for every parameter;
* images must be square (a quarter turn of a non-square batch changes its shape).

It keeps no state: under ``torchrun`` each rank computes the loss of its own share, as USB's ranks
do. Every term is a per-sample mean, so on equal shares of a network without BatchNorm 2 ranks log
what 1 process logs (``tests/scale/test_scale_usb_family_ddp.py``); with BatchNorm the statistics
are each share's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, check_logits, loss_logs, pseudo_labels, view, with_heads
from ptl_ssl.remixmatch import ROTATION, quarter_turns

#: Name of the feature-consistency head among the algorithm's heads.
DS = "ds"


class CRMatch(Stateless):
    """CRMatch's loss and its two heads (stateless: the threshold is fixed)."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong", "weak")  # weak:1: the source of the rotated images

    def __init__(self, num_classes: int, threshold: float = 0.95, lambda_rot: float = 1.0) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_rot = lambda_rot

    def heads(self, feature_dim: int) -> dict[str, nn.Module]:
        """The rotation MLP and the ``ds`` map of the features (USB's shapes)."""
        return {
            ROTATION: nn.Sequential(
                nn.Linear(feature_dim, feature_dim), nn.ReLU(), nn.Linear(feature_dim, 4)
            ),
            DS: nn.Linear(feature_dim, feature_dim),
        }

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = view(labeled, "weak", "CRMatch", "labeled")
        weak = view(unlabeled, "weak", "CRMatch", "unlabeled")
        strong = view(unlabeled, "strong", "CRMatch", "unlabeled")
        n, nu = x.shape[0], weak.shape[0]
        batches = [x, weak, strong]
        if self.lambda_rot > 0:
            source = view(unlabeled, "weak:1", "CRMatch", "unlabeled")[:n]
            turns = torch.arange(4, device=x.device).repeat_interleave(source.shape[0])
            batches.append(quarter_turns(source.repeat(4, 1, 1, 1), turns))
        out = with_heads(model, torch.cat(batches), DS, "CRMatch")
        logits = out["logits"]
        check_logits(logits, self.num_classes, "CRMatch")
        logits_x = logits[:n]
        logits_weak, logits_strong = logits[n : n + 2 * nu].chunk(2)
        ds_weak, ds_strong = out[DS][n : n + 2 * nu].float().chunk(2)

        labels, mask = pseudo_labels(logits_weak, self.threshold)
        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = (F.cross_entropy(logits_strong, labels, reduction="none") * mask).mean()
        # USB's cosine_embedding_loss(s, w, -1): max(0, cos(s, w)) per pair (its eps 1e-12 inside
        # the norms' product)
        cos = F.cosine_embedding_loss(ds_strong, ds_weak, -torch.ones_like(mask), reduction="none")
        loss_ds = (cos * mask).mean()
        rotation = out[ROTATION]
        if self.lambda_rot > 0:
            loss_rot = F.cross_entropy(rotation[n + 2 * nu :].float(), turns)
        else:
            loss_rot = rotation.sum() * 0.0  # keeps the head in the graph (DDP), no gradient
        loss = loss_x + loss_u + loss_ds + self.lambda_rot * loss_rot
        return loss, loss_logs(
            loss_x, loss_u, loss_ds=loss_ds.detach(), loss_rot=loss_rot.detach(), mask_ratio=mask.mean()
        )
