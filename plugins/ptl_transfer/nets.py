"""The target network and what the stages do to it: head swaps, the KD auxiliary head, EMA.

Any model plugin works as the target architecture: its classifier head is taken to be the last
``nn.Linear`` it contains (:func:`ptl_cli.engine.heads.head_name`, which SSL algorithms' heads
use too; true of the built-in models and of torchvision's classifiers).
PP trains the body with a ``K_s``-way head and then swaps in a fresh ``K_t``-way head; KD adds
an auxiliary ``K_s``-way head fed by the same features as the ``K_t`` head.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ptl_cli import plugins
from ptl_cli.engine.heads import WithHeads, get_head, head_name  # one definition for core and plugin


def build(recipe: Any, num_classes: int, channels: int, image_size: int) -> nn.Module:
    m = recipe.model
    spec = plugins.get("models", m.arch)
    return spec.build(num_classes, channels, image_size, m.width, params=m.params, where=f"[model] {m.arch}")


def swap_head(model: nn.Module, num_classes: int, generator: torch.Generator | None = None) -> nn.Module:
    """Replace the head by a fresh ``num_classes``-way Linear (initialized from ``generator``)."""
    name = head_name(model)
    old = model.get_submodule(name)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    init_linear(new, generator)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new.to(old.weight.device))
    return model


def init_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """PyTorch's default Linear init, drawn from ``generator`` (uniform ±1/sqrt(fan_in))."""
    bound = 1.0 / layer.in_features**0.5
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=generator)


def aux_head(net: nn.Module, num_aux: int, generator: torch.Generator | None = None) -> WithHeads:
    """KD's network: ``net`` with a second, ``num_aux``-way head ``"aux"`` on the features that
    enter its classifier head (initialized from ``generator``), the same wrapper SSL algorithms'
    heads use: ``model(x, with_heads=True)["aux"]`` are the auxiliary logits of that call, and
    :func:`ptl_cli.engine.heads.plain` gives the network alone for evaluation and export."""
    head = get_head(net)
    aux = nn.Linear(head.in_features, num_aux).to(head.weight.device)
    init_linear(aux, generator)
    return WithHeads(net, {"aux": aux})


def renamed_aux_keys(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """A KD checkpoint written before the auxiliary head moved into ``WithHeads`` (its keys
    ``aux.*``), with the keys ``heads.aux.*`` the network now has; others unchanged."""
    if state is None:
        return None

    def renamed(weights: dict[str, Any] | None) -> dict[str, Any] | None:
        if weights is None:
            return None
        return {("heads." + k if k.startswith("aux.") else k): v for k, v in weights.items()}

    return {**state, "model": renamed(state.get("model")), "ema": renamed(state.get("ema"))}


class EMA:
    """Exponential moving average of a model's parameters (buffers are copied), for evaluation.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` so that short runs (the CPU
    quickstart has a few hundred steps) are not dominated by the random initialization.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.model.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in model.parameters()], 1.0 - decay)
        for ema_buf, buf in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)


def sgd(model: nn.Module, opt: Any) -> torch.optim.SGD:
    """SGD (Nesterov) with weight decay on weights only: BatchNorm parameters and biases are exempt."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": opt.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    from ptl_cli.engine.compute import optimizer_options

    device = (decay or no_decay)[0].device
    return torch.optim.SGD(
        groups,
        lr=opt.lr,
        momentum=opt.momentum,
        nesterov=opt.nesterov and opt.momentum > 0,
        **optimizer_options(device),  # fused on CUDA: no host sync under fp16 loss scaling
    )


def cosine(optimizer: torch.optim.Optimizer, total: int, cycles: float) -> torch.optim.lr_scheduler.LambdaLR:
    """``lr · cos(π · cycles · t / total)``: FixMatch's ``cos(7πt/16T)`` with ``cycles = 7/16``."""
    import math

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: max(0.0, math.cos(math.pi * cycles * t / max(1, total)))
    )


@torch.no_grad()
def count_correct(
    model: nn.Module, batches: Any, mean: Any, std: Any, device: Any, precision: Any
) -> tuple[int, int]:
    """``(correct, seen)`` top-1 counts of ``model`` in eval mode over ``(uint8 images, labels)`` batches.

    Counts rather than a fraction, so that data-parallel ranks can sum their shares.
    """
    from ptl_cli.data.base import normalize, to_float
    from ptl_cli.data.loader import Prefetcher
    from ptl_cli.engine.sync import host_sync

    was_training = model.training
    model.eval()
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # on the device until the end
    with Prefetcher(batches, device) as on_device:  # pinned, copied ahead
        for images, labels in on_device:
            x = normalize(to_float(images), mean, std)
            with precision.autocast():
                pred = model(x).argmax(dim=1)
            counts[0] += (pred == labels).sum()
            counts[1] += labels.numel()
    model.train(was_training)
    with host_sync("evaluation result"):
        correct, total = counts.tolist()
    return correct, total
