"""Shared fixtures for the pruning tests: real Fashion-MNIST images and real tiny models."""

from __future__ import annotations

import pytest
import torch

from ptl_cli import plugins, pruning


@pytest.fixture(scope="session")
def fashion() -> tuple[torch.Tensor, torch.Tensor]:
    """128 real training images of the bundled pack, normalized floats (1×28×28), with labels."""
    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    index = torch.arange(0, 128 * 31, 31) % len(dataset)
    images = dataset.images[index].float() / 255.0
    mean, std = dataset.info.mean[0], dataset.info.std[0]
    return (images - mean) / std, dataset.targets[index]


def build(name: str, width: float = 1.0, **params):
    """A model from the models plugin, sized for Fashion-MNIST (10 classes, 1×28×28)."""
    return plugins.get("models", name).build(10, 1, 28, width, params=params)


def train_steps(model, pruner, images, labels, steps: int, start: int = 0, lr: float = 0.1, batch: int = 32):
    """``steps`` real SGD steps (momentum 0.9, weight decay) on what the pruner trains, each the
    step ``ptl prune`` runs (:func:`ptl_cli.pruning.train_step`)."""
    optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=lr, momentum=0.9, weight_decay=1e-4)
    model.train()
    for i in range(steps):
        first = (i * batch) % images.shape[0]
        x, y = images[first : first + batch], labels[first : first + batch]
        pruning.train_step(pruner, model, optimizer, x, y, start + i + 1)
    return optimizer


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every prune test runs with one intra-op thread (the shared ``one_thread`` fixture)."""
