"""MixMatch (Berthelot et al. 2019): sharpened averaged guesses, then mixup across the labeled and
unlabeled batch.

Two weak views ``u1, u2`` of each unlabeled sample are predicted with BatchNorm's statistics
frozen and without gradient; their mean prediction, sharpened with temperature ``T``
(``p^(1/T)`` renormalized), is the guess for both views. The inputs ``[x_l, u1, u2]`` and their
targets ``[onehot(y_l), guess, guess]`` are mixed with one random permutation of the whole
batch and one ``lam ~ Beta(alpha, alpha)`` (taken as ``max(lam, 1 - lam)``, so each mixed
sample stays closer to its own input). The mixed batch is forwarded in chunks of the labeled
batch size: the first (labeled) chunk updates BatchNorm's statistics, the others run with them
frozen, as USB does. Then

``L = softCE(f(mixed_l), target_l) + w(t) * mean MSE(softmax(f(mixed_u)), target_u)``,

``w(t)`` ramping up linearly to ``lambda_u`` over the first ``rampup_fraction`` of training.
Defaults are USB's (``T = 0.5``, ``alpha = 0.5``, ``lambda_u = 100`` from its image configs,
``rampup_fraction = 1/64``).

Equal to USB's ``MixMatch.train_step`` given the same ``lam`` and permutation
(``tests/ssl/test_reference_usb_family.py``), with two deliberate differences: ``lam`` is drawn
on the batch's device from torch's generator (USB: NumPy's, on the host), and USB's extra
forward of the labeled batch whose output only feeds its feature logs is skipped (it changes
nothing: BatchNorm is frozen there and the output takes no part in the loss). Under ``torchrun``
each rank mixes its own share of the batch, as USB's ranks do; the ranks draw the same ``lam``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ptl_ssl.common import Stateless, check_logits, frozen_batchnorm, view
from ptl_ssl.pseudolabel import linear_rampup


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``p^(1/T)``, rows renormalized."""
    sharp = probs ** (1 / temperature)
    return sharp / sharp.sum(dim=-1, keepdim=True)


class MixMatch(Stateless):
    """MixMatch's loss: guesses from two weak views, mixup across both batches."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "weak")  # keys "weak" and "weak:1": the two views of each sample

    def __init__(
        self,
        num_classes: int,
        lambda_u: float = 100.0,
        temperature: float = 0.5,
        alpha: float = 0.5,
        rampup_fraction: float = 1 / 64,
    ) -> None:
        self.num_classes = num_classes
        self.lambda_u = lambda_u
        self.temperature = temperature
        self.alpha = alpha
        self.rampup_fraction = rampup_fraction

    def mix_draws(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """``max(lam, 1 - lam)`` with ``lam ~ Beta(alpha, alpha)`` (a 0-dim tensor: the ratio of two
        Gamma draws) and a permutation of ``n``, both drawn on ``device``; ``lam = 1`` at ``alpha = 0``."""
        if self.alpha <= 0:
            return torch.ones((), device=device), torch.randperm(n, device=device)
        concentration = torch.full((2,), self.alpha, device=device)
        gamma = torch.distributions.Gamma(concentration, torch.ones_like(concentration), validate_args=False)
        g = gamma.sample()
        lam = g[0] / g.sum()
        return torch.maximum(lam, 1 - lam), torch.randperm(n, device=device)

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = view(labeled, "weak", "MixMatch", "labeled")
        u1 = view(unlabeled, "weak", "MixMatch", "unlabeled")
        u2 = view(unlabeled, "weak:1", "MixMatch", "unlabeled")
        with torch.no_grad(), frozen_batchnorm(model):
            logits_1, logits_2 = model(u1), model(u2)
            check_logits(logits_1, self.num_classes, "MixMatch")
            mean = (torch.softmax(logits_1.float(), dim=-1) + torch.softmax(logits_2.float(), dim=-1)) / 2
            guess = sharpen(mean, self.temperature)

        inputs = torch.cat([x, u1, u2])
        labels = torch.cat([F.one_hot(targets, self.num_classes).to(guess.dtype), guess, guess])
        lam, perm = self.mix_draws(inputs.shape[0], inputs.device)
        mixed_x = lam.to(inputs.dtype) * inputs + (1 - lam.to(inputs.dtype)) * inputs[perm]
        mixed_y = lam * labels + (1 - lam) * labels[perm]

        chunks = mixed_x.split(x.shape[0])
        logits = [model(chunks[0])]
        with frozen_batchnorm(model):
            logits.extend(model(chunk) for chunk in chunks[1:])
        logits_x, logits_u = logits[0], torch.cat(logits[1:])
        n = x.shape[0]
        loss_x = -(mixed_y[:n] * F.log_softmax(logits_x.float(), dim=-1)).sum(dim=1).mean()
        probs_u = torch.softmax(logits_u.float(), dim=-1)
        loss_u = F.mse_loss(probs_u, mixed_y[n:], reduction="none").mean(dim=1).mean()
        weight = self.lambda_u * linear_rampup(step, self.rampup_fraction * total_steps)
        loss = loss_x + weight * loss_u
        logs = {
            "loss_x": loss_x.detach(),
            "loss_u": loss_u.detach(),
            "weight_u": loss_u.new_full((), weight).detach(),
            "mix_lambda": lam.detach(),
        }
        return loss, logs
