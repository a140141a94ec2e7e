"""ReMixMatch (Berthelot et al., ICLR 2020), as USB runs it: distribution alignment, mixup across
both batches, a consistency term on one strong view and a rotation head.

Each unlabeled sample comes with a weak view ``w`` and two strong views ``s0, s1``. The weak view
is predicted without gradient and with BatchNorm's statistics frozen; its prediction is aligned
(:mod:`ptl_ssl.distalign`: rescaled by ``p_target / p_model``, ``p_model`` an EMA, ``m =
ema_decay``, of the mean unlabeled prediction, starting at the first batch's mean; ``p_target``
the labeled class distribution) and sharpened with temperature ``T``: the guess ``q``. The
inputs ``[x_l, s0, s1, w]`` and targets ``[onehot(y_l), q, q, q]`` are mixed with one
permutation and one ``lam ~ Beta(alpha, alpha)``, ``max(lam, 1 - lam)`` (MixMatch's
:meth:`~ptl_ssl.mixmatch.MixMatch.mix_draws`), and forwarded in chunks of the labeled batch size,
the first (labeled) chunk alone updating BatchNorm's statistics. With ``w(t)`` ramping up
linearly to 1 over the first ``rampup_fraction`` of training:

``L = softCE(mixed_l) + w(t)·lambda_kl·softCE(f(s0), q) + w(t)·lambda_u·softCE(mixed_u) +
lambda_rot·CE(rot(s0 rotated by 90°·r), r)``,

``r`` uniform in {0, 1, 2, 3} per sample and ``rot`` a linear rotation classifier on the
penultimate features (the algorithm's ``heads``: :mod:`ptl_cli.engine.heads`, so any target
network works). The passes on ``x_l, s0, s1`` and the rotated batch run with BatchNorm's
statistics frozen, as USB's. Defaults are USB's for images (``T = 0.5``, ``alpha = 0.75``,
``lambda_u = 1.5`` from its image configs, ``lambda_kl = lambda_rot = 0.5``, ``rampup_fraction =
1/64``).

Equal to USB's ``ReMixMatch.train_step`` given the same mixup draws and rotations
(``tests/ssl/test_reference_remixmatch.py``), with these deliberate differences:

* ``lam``, the permutation and the rotations are drawn with torch on the batch's device (USB:
  ``lam`` from NumPy, the rotations by its data loader's workers with NumPy);
* ``p_target`` is the uniform distribution: the labeled set's class distribution when every class
  has as many labels, as ptl's splits give (``target.labels_per_class``). USB counts the labeled
  set's classes; an algorithm here does not see them;
* images must be square (a quarter turn of a non-square batch changes its shape; USB's PIL
  rotation crops it instead);
* with ``lambda_rot = 0`` there is no rotated pass (as USB without rotation), but the rotation
  head stays in the graph at weight 0 (USB builds none), so that DistributedDataParallel sees a
  gradient for every parameter;
* USB's passes of the labeled batch and of the second strong view whose outputs only feed its
  feature logs are skipped (BatchNorm is frozen there: they change nothing).

Under ``torchrun`` each rank mixes and rotates its own share, as USB's ranks do; ``p_model``
follows the global batch, so every rank holds the same prior.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import TensorState, check_logits, frozen_batchnorm, view, with_heads
from ptl_ssl.distalign import align, update_priors
from ptl_ssl.mixmatch import MixMatch, sharpen
from ptl_ssl.pseudolabel import linear_rampup

#: Name of the rotation classifier among the algorithm's heads.
ROTATION = "rotation"


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i -sum_k targets_ik log softmax(logits)_ik``."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(dim=1).mean()


def quarter_turns(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Image ``i`` rotated by ``turns[i]`` quarter turns counter-clockwise (PIL's and torchvision's
    positive angles), picked per image with ``torch.where``: no host sync. Square images only."""
    h, w = images.shape[-2:]
    if h != w:
        raise ValueError(f"rotation needs square images, got {h}×{w}; resize the target to a square size")
    out = images
    for k in (1, 2, 3):
        out = torch.where((turns == k).view(-1, 1, 1, 1), torch.rot90(images, k, dims=(2, 3)), out)
    return out


class ReMixMatch(TensorState):
    """ReMixMatch's loss, its running class prior and its rotation head."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong", "strong")  # keys weak, strong, strong:1
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {"p_model": torch.float32, "p_model_seen": torch.bool}

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 1.5,
        lambda_kl: float = 0.5,
        lambda_rot: float = 0.5,
        temperature: float = 0.5,
        alpha: float = 0.75,
        rampup_fraction: float = 1 / 64,
        ema_decay: float = 0.999,
    ) -> None:
        self.num_classes = num_classes
        self.lambda_u = lambda_u
        self.lambda_kl = lambda_kl
        self.lambda_rot = lambda_rot
        self.temperature = temperature
        self.rampup_fraction = rampup_fraction
        self.ema_decay = ema_decay
        self.mixer = MixMatch(num_classes, alpha=alpha)
        self.p_model = torch.full((num_classes,), 1.0 / num_classes)
        self.p_model_seen = torch.tensor(False)

    def heads(self, feature_dim: int) -> dict[str, nn.Module]:
        """The rotation classifier: which of four quarter turns an image had."""
        return {ROTATION: nn.Linear(feature_dim, 4)}

    def mix_draws(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixup ratio and permutation (MixMatch's draws on ``device``)."""
        return self.mixer.mix_draws(n, device)

    def rotation_draws(self, n: int, device: torch.device) -> torch.Tensor:
        """Quarter turns in {0, 1, 2, 3} for ``n`` images, on ``device``."""
        return torch.randint(0, 4, (n,), device=device)

    def guess(self, logits_weak: torch.Tensor) -> torch.Tensor:
        """The sharpened, aligned weak-view prediction (updates ``p_model`` first, as USB's hook)."""
        self._follow(logits_weak.device)
        probs = torch.softmax(logits_weak.detach().float(), dim=-1)
        p_target = torch.full_like(self.p_model, 1.0 / self.num_classes)
        self.p_model, self.p_model_seen, _ = update_priors(
            self.p_model, self.p_model_seen, p_target, probs, None, self.ema_decay
        )
        return sharpen(align(probs, self.p_model, p_target), self.temperature)

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = view(labeled, "weak", "ReMixMatch", "labeled")
        w = view(unlabeled, "weak", "ReMixMatch", "unlabeled")
        s0 = view(unlabeled, "strong", "ReMixMatch", "unlabeled")
        s1 = view(unlabeled, "strong:1", "ReMixMatch", "unlabeled")
        with torch.no_grad(), frozen_batchnorm(model):
            logits_w = model(w)
        check_logits(logits_w, self.num_classes, "ReMixMatch")
        guess = self.guess(logits_w)
        with frozen_batchnorm(model):
            # the labeled and second strong passes of USB only fed its feature logs: skipped
            out_s0 = with_heads(model, s0, ROTATION, "ReMixMatch")
        logits_s0 = out_s0["logits"]

        inputs = torch.cat([x, s0, s1, w])
        labels = torch.cat([F.one_hot(targets, self.num_classes).to(guess.dtype), guess, guess, guess])
        lam, perm = self.mix_draws(inputs.shape[0], inputs.device)
        mixed_x = lam.to(inputs.dtype) * inputs + (1 - lam.to(inputs.dtype)) * inputs[perm]
        mixed_y = lam * labels + (1 - lam) * labels[perm]
        chunks = mixed_x.split(x.shape[0])
        logits = [model(chunks[0])]
        with frozen_batchnorm(model):
            logits.extend(model(chunk) for chunk in chunks[1:])
        n = x.shape[0]
        loss_x = soft_cross_entropy(logits[0], mixed_y[:n])
        loss_u = soft_cross_entropy(torch.cat(logits[1:]), mixed_y[n:])
        loss_kl = soft_cross_entropy(logits_s0, guess)
        ramp = linear_rampup(step, self.rampup_fraction * total_steps)

        if self.lambda_rot > 0:
            turns = self.rotation_draws(s0.shape[0], s0.device)
            with frozen_batchnorm(model):
                logits_rot = with_heads(model, quarter_turns(s0, turns), ROTATION, "ReMixMatch")[ROTATION]
            loss_rot = F.cross_entropy(logits_rot.float(), turns)
        else:  # no rotated pass, as USB without rotation; the head stays in the graph (DDP)
            loss_rot = out_s0[ROTATION].sum() * 0.0
        loss = loss_x + self.lambda_kl * ramp * loss_kl + self.lambda_u * ramp * loss_u
        loss = loss + self.lambda_rot * loss_rot
        logs = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "loss_kl": loss_kl.detach(),
            "loss_rot": loss_rot.detach(),
            "weight_u": loss_u.new_full((), self.lambda_u * ramp).detach(),
            "mix_lambda": lam.detach(),
        }
        return loss, logs
