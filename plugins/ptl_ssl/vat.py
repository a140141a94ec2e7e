"""VAT (Miyato et al. 2018): predictions should not change under the small input perturbation
that changes them most (virtual adversarial training), plus entropy minimization.

For the weak view ``u`` of the unlabeled batch and its logits ``z = f(u)``: a random direction
``d`` (one normal draw per pixel) scaled to norm ``xi = 1e-6`` per sample, one power iteration
``g = grad_d KL(softmax(z) || softmax(f(u + d)))``, and ``r_adv = eps * g / ||g||`` per sample;

``L = CE(f(weak(x_l)), y_l) + w(t) * KL(softmax(z) || softmax(f(u + r_adv))) + lambda_ent * H(softmax(z))``

with ``z`` detached inside the KL terms, ``w(t)`` ramping up linearly to ``lambda_u`` over the
first ``rampup_fraction`` of training and ``H`` the mean entropy (with gradient). As in USB, the
labeled batch alone updates BatchNorm's running statistics: the unlabeled passes run with them
frozen. Defaults are USB's (``eps = 6``, ``lambda_ent = 0.06``, ``lambda_u = 0.3`` from its
image configs, ``rampup_fraction = 0.4``).

The forward is re-run inside ``loss``: twice more on the unlabeled batch. The power iteration
backpropagates the probe's KL into ``d`` only (``backward(inputs=[d])``), so it leaves the
parameters' gradients alone (USB calls ``backward`` and then zeroes them: the same result), and
it runs on the unwrapped module (no DDP bookkeeping for a graph whose parameters get no
gradient). ``d`` is drawn on the batch's device from the global generator; under ``torchrun``
each rank keeps its rows of the global batch's draw, so 2 ranks draw what 1 process would.
Given the same generator state, equal to USB's ``VAT.train_step``
(``tests/ssl/test_reference_usb_family.py``). At ``xi = 1e-6`` (USB's and the paper's default)
the probe's gradient sits at float32's resolution, so the direction depends on the order of the
arithmetic: 2 ranks find a different (equally valid) direction than 1 process; at ``xi = 1e-2``
they agree (``tests/scale/test_scale_usb_family_ddp.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.data.augment import current_shard
from ptl_ssl.common import Stateless, check_logits, frozen_batchnorm, loss_logs, unwrap, view
from ptl_ssl.pseudolabel import linear_rampup


def kl_with_logits(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``mean_u KL(softmax(target) || softmax(logits))`` (the target without gradient)."""
    target_logits = target_logits.detach()
    q = F.softmax(target_logits, dim=1)
    return (q * (F.log_softmax(target_logits, dim=1) - F.log_softmax(logits, dim=1))).sum(dim=1).mean()


def per_sample_unit(d: torch.Tensor) -> torch.Tensor:
    """``d`` with each sample scaled to unit L2 norm (``1e-16`` keeps a zero sample finite)."""
    norm = d.flatten(1).pow(2).sum(dim=1).sqrt().reshape(-1, *([1] * (d.ndim - 1)))
    return d / (norm + 1e-16)


def sharded_normal(like: torch.Tensor) -> torch.Tensor:
    """Standard normal draws shaped like ``like``, on its device; inside a rank's
    :func:`ptl_cli.data.augment.batch_shard`, that rank's rows of the global batch's draw."""
    rank, world = current_shard()
    shape = (like.shape[0] * world, *like.shape[1:])
    return torch.randn(shape, device=like.device, dtype=like.dtype)[rank::world]


class VAT(Stateless):
    """VAT's loss: a labeled pass, then the unlabeled pass, a probe and the adversarial pass."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak",)

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 0.3,
        lambda_ent: float = 0.06,
        eps: float = 6.0,
        xi: float = 1e-6,
        rampup_fraction: float = 0.4,
    ) -> None:
        self.num_classes = num_classes
        self.lambda_u = lambda_u
        self.lambda_ent = lambda_ent
        self.eps = eps
        self.xi = xi
        self.rampup_fraction = rampup_fraction

    def adversarial_loss(self, model: nn.Module, u: torch.Tensor, logits_u: torch.Tensor) -> torch.Tensor:
        """The KL between ``f(u)`` and ``f(u + r_adv)``, after one power iteration for ``r_adv``."""
        d = (self.xi * per_sample_unit(sharded_normal(u))).requires_grad_()
        with torch.enable_grad():
            probe = kl_with_logits(logits_u, unwrap(model)(u + d))
            probe.backward(inputs=[d])  # the gradient reaches d only, never the parameters
        r_adv = self.eps * per_sample_unit(d.grad.detach())
        return kl_with_logits(logits_u, model(u + r_adv))

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = view(labeled, "weak", "VAT", "labeled")
        u = view(unlabeled, "weak", "VAT", "unlabeled")
        logits_x = model(x)
        check_logits(logits_x, self.num_classes, "VAT")
        with frozen_batchnorm(model):
            logits_u = model(u)
            loss_u = self.adversarial_loss(model, u, logits_u)
        probs = F.softmax(logits_u, dim=1)
        loss_ent = -(probs * F.log_softmax(logits_u, dim=1)).sum(dim=1).mean()
        loss_x = F.cross_entropy(logits_x, targets)
        weight = self.lambda_u * linear_rampup(step, self.rampup_fraction * total_steps)
        loss = loss_x + weight * loss_u + self.lambda_ent * loss_ent
        return loss, loss_logs(
            loss_x, loss_u, loss_ent=loss_ent.detach(), weight_u=loss_u.new_full((), weight).detach()
        )
