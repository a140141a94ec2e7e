"""Measuring source models the way the tests and model cards report them.

* classifier: top-1 accuracy on a labeled dataset;
* conditional generator: *agreement* — the fraction of samples conditioned on class ``c`` that a
  source classifier assigns to ``c``, per class and on average;
* soft conditioning: the classifier's mean probabilities for samples conditioned on a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


@torch.no_grad()
def accuracy(classifier: Any, images_u8: torch.Tensor, targets: torch.Tensor, batch: int = 500) -> float:
    correct = 0
    device = next(classifier.parameters()).device
    for start in range(0, images_u8.shape[0], batch):
        x = images_u8[start : start + batch].to(device).float().div_(255)
        pred = classifier(x).argmax(1).cpu()
        correct += int((pred == targets[start : start + batch]).sum())
    return correct / max(1, images_u8.shape[0])


@torch.no_grad()
def agreement(
    generator: Any, classifier: Any, per_class: int, seed: int = 0, batch: int = 100
) -> tuple[float, list[float]]:
    """Mean and per-class rate at which ``classifier(generator.sample(c)) == c``."""
    gen = torch.Generator().manual_seed(seed)
    rates = []
    for c in range(generator.num_classes):
        hits = 0
        for start in range(0, per_class, batch):
            n = min(batch, per_class - start)
            images = generator.sample(torch.full((n,), c, dtype=torch.long), generator=gen)
            hits += int((classifier(images).argmax(1).cpu() == c).sum())
        rates.append(hits / per_class)
    return sum(rates) / len(rates), rates


@torch.no_grad()
def mean_probs(
    generator: Any, classifier: Any, probs: Sequence[float], n: int, seed: int = 0
) -> torch.Tensor:
    """The classifier's mean softmax over ``n`` samples conditioned on the row ``probs``."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor(probs, dtype=torch.float32).expand(n, -1).contiguous()
    images = generator.sample(y, generator=gen)
    return torch.softmax(classifier(images), dim=1).mean(0).cpu()
