"""Gradual magnitude pruning (Zhu & Gupta 2017), as a ptl pruner.

The weights are trained. Every ``update_every`` steps each ``Conv2d``/``Linear`` layer keeps the
largest-magnitude ``1 - s_t`` fraction of its (still kept) weights, where the sparsity follows the
cubic ramp ``s_t = s · (1 - (1 - t / T)^3)`` and reaches ``s`` at step ``T = ramp_steps``. A pruned
weight never comes back. Masks are applied with :mod:`torch.nn.utils.parametrize` and live in the
model's buffers, so the model's own state dict checkpoints them; the pruner keeps no state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

PRUNABLE = (nn.Conv2d, nn.Linear)


class Mask(nn.Module):
    """Parametrization ``weight * mask``; the mask is a buffer, saved with the model."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def masked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every layer that carries a :class:`Mask`."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE) and parametrize.is_parametrized(m, "weight")
    ]


def scheduled_sparsity(final: float, step: int, ramp_steps: int) -> float:
    """The cubic ramp: 0 at step 0, ``final`` from ``ramp_steps`` on."""
    progress = min(1.0, step / ramp_steps)
    return final * (1.0 - (1.0 - progress) ** 3)


@torch.no_grad()
def prune_smallest(model: nn.Module, target: float) -> None:
    """Shrink every layer's mask to its largest-magnitude ``1 - target`` fraction of weights."""
    for _, layer in masked_layers(model):
        mask = layer.parametrizations.weight[0].mask
        weight = layer.parametrizations.weight.original
        n = mask.numel()
        keep = n - int(target * n + 0.5)
        # pruned weights score -1 so they stay pruned; a stable sort breaks ties by position
        score = torch.where(mask.bool(), weight.abs(), torch.full_like(weight, -1.0)).flatten()
        order = torch.sort(score, descending=True, stable=True).indices
        new = torch.zeros(n, dtype=mask.dtype, device=mask.device)
        new[order[:keep]] = 1.0
        mask.copy_(new.view_as(mask) * mask)


def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain layer names, masks applied: loads into the model as its factory built it."""
    state = {k: v for k, v in model.state_dict().items() if "parametrizations.weight." not in k}
    for name, layer in masked_layers(model):
        state[f"{name}.weight" if name else "weight"] = layer.weight.detach().clone()
    return state


class GradualMagnitudePruner:
    """The ``gmp`` pruner: ptl builds it as ``GradualMagnitudePruner(**params)``."""

    def __init__(self, sparsity: float = 0.5, ramp_steps: int = 1000, update_every: int = 100) -> None:
        self.final = sparsity
        self.ramp_steps = ramp_steps
        self.update_every = update_every

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        """Attach an all-ones mask to every prunable layer (no randomness: ``seed`` is unused)."""
        for module in model.modules():
            if isinstance(module, PRUNABLE):
                parametrize.register_parametrization(module, "weight", Mask(module.weight))
        return model

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def after_step(self, model: nn.Module, step: int) -> None:
        """``step`` counts optimizer steps done; masks change only every ``update_every`` steps."""
        if step > self.ramp_steps or (step % self.update_every and step != self.ramp_steps):
            return
        prune_smallest(model, scheduled_sparsity(self.final, step, self.ramp_steps))

    def sparsity(self, model: nn.Module) -> float:
        masks = [layer.parametrizations.weight[0].mask for _, layer in masked_layers(model)]
        total = sum(m.numel() for m in masks)
        return 1.0 - sum(int(m.count_nonzero()) for m in masks) / total if total else 0.0

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return dense_state_dict(model)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless: the masks come back with the model's state dict."""
