"""Shared fixtures for the SSL plugin's tests: real tiny models and real images.

Helpers are handed out as fixtures because tests run with ``--import-mode=importlib``, where a
test module cannot import a sibling module.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn


class LogitsModel(nn.Module):
    """A real linear layer set to the identity: images ``(B, K, 1, 1)`` come out as logits ``(B, K)``.

    It lets a test choose the exact logits an algorithm sees while still running a real module
    (and still receiving gradients).
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(num_classes, num_classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(num_classes))
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x))


def as_images(logits: list[list[float]]) -> torch.Tensor:
    """Logit rows as the ``(B, K, 1, 1)`` "images" a :class:`LogitsModel` maps back to them."""
    t = torch.tensor(logits, dtype=torch.float32)
    return t.view(t.shape[0], t.shape[1], 1, 1)


def tiny_cnn(num_classes: int = 5, channels: int = 1) -> nn.Module:
    """Conv + BatchNorm + linear head: small, but with real BN buffers and train/eval behaviour."""
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, num_classes),
    )


@pytest.fixture
def logits_model():
    """``logits_model(K)``: a :class:`LogitsModel` (images ``(B, K, 1, 1)`` -> those logits)."""
    return LogitsModel


@pytest.fixture(name="as_images")
def as_images_fixture():
    """``as_images(rows)``: logit rows as images a :class:`LogitsModel` maps back to them."""
    return as_images


@pytest.fixture(name="tiny_cnn")
def tiny_cnn_fixture():
    """``tiny_cnn(num_classes, channels)``: a real conv + BatchNorm classifier."""
    return tiny_cnn


@pytest.fixture(scope="session")
def fashion() -> tuple[torch.Tensor, torch.Tensor, tuple[float, ...], tuple[float, ...]]:
    """64 real Fashion-MNIST training images (uint8, 1×28×28) from the bundled pack, with labels
    and the dataset's normalization, looked up through the plugin registry like a workflow does."""
    from ptl_cli import plugins

    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    index = torch.arange(0, 64 * 37, 37) % len(dataset)
    images, labels = dataset.images[index], dataset.targets[index]
    return images, labels, tuple(dataset.info.mean), tuple(dataset.info.std)


@pytest.fixture(scope="session")
def fashion01(fashion) -> torch.Tensor:
    """The same images as floats in [0, 1]."""
    return fashion[0].float() / 255.0


@pytest.fixture(scope="session")
def fashion_rgb(fashion01) -> torch.Tensor:
    """A 3-channel version with a different tint per channel, so colour ops have colour to act on."""
    tint = torch.tensor([1.0, 0.7, 0.4]).view(1, 3, 1, 1)
    return fashion01 * tint + (1 - tint) * 0.25
