"""The branch-free 2×2 max pooling computes what ``nn.MaxPool2d(2)`` computes, bit for bit.

Conv-2/4/6/8 use it (the quickstart's target and source classifier, the pruning paper's Conv-6),
so every documented number depends on it being the same function with the same gradients: values,
which entry of a window gets the gradient (the first maximum, in row-major order), odd sizes,
ties, infinities, and whole training steps of a real network on real images.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli import plugins
from ptl_models.pooling import MaxPool2x2


def both(
    x: torch.Tensor, seed: int = 1
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(output, input gradient) of nn.MaxPool2d(2) and of MaxPool2x2 for the same upstream gradient."""
    results = []
    for pool in (nn.MaxPool2d(2), MaxPool2x2()):
        leaf = x.detach().clone().requires_grad_()
        out = pool(leaf)
        grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
        out.backward(grad)
        results.append((out.detach(), leaf.grad))
    return results[0], results[1]


def with_ties(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """ReLU-like activations: half zeros, and positive values repeated inside windows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.relu(torch.randn(shape, generator=g)) * (torch.rand(shape, generator=g) > 0.5)
    return x.clamp(max=1.0)


@pytest.mark.parametrize(
    "shape", [(2, 3, 8, 8), (4, 5, 7, 9), (1, 1, 2, 2), (3, 2, 2, 5), (64, 8, 28, 28), (2, 4, 32, 32)]
)
def test_values_and_gradients_are_those_of_max_pool2d(shape):
    x = with_ties(shape)
    (ref_out, ref_grad), (out, grad) = both(x)
    assert torch.equal(out, ref_out) and torch.equal(grad, ref_grad)
    assert (grad != 0).sum() == ref_out.numel()  # one entry per window gets the gradient: it matters which


def test_every_tie_pattern_sends_the_gradient_where_max_pool2d_does():
    """All 2⁴ patterns of two values in one window (zeros are the common tie after a ReLU)."""
    patterns = torch.tensor([[(p >> k) & 1 for k in range(4)] for p in range(16)], dtype=torch.float32)
    x = patterns.view(16, 1, 2, 2)
    (_, ref_grad), (_, grad) = both(x)
    assert torch.equal(grad, ref_grad)
    chosen = (ref_grad != 0).flatten(1).float().argmax(1)
    assert chosen.unique().numel() == 4  # each position of a window is chosen somewhere


def test_infinities_float64_and_bfloat16():
    x = with_ties((3, 4, 6, 6))
    x[0, 0, :2, :2] = float("-inf")
    x[1, 1, 2:4, 2:4] = float("inf")
    for tensor in (x, x.double(), x.bfloat16()):
        (ref_out, ref_grad), (out, grad) = both(tensor)
        assert out.dtype == tensor.dtype and torch.equal(out, ref_out) and torch.equal(grad, ref_grad)


def test_the_branch_free_path_is_the_one_taken_on_a_contiguous_cpu_tensor():
    x = with_ties((2, 3, 8, 8)).requires_grad_()
    assert "_MaxPool2x2" in type(MaxPool2x2()(x).grad_fn).__name__
    last = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    y = MaxPool2x2()(last)  # PyTorch's own (already vectorized) kernel
    assert "_MaxPool2x2" not in type(y.grad_fn).__name__ and torch.equal(y, F.max_pool2d(last, 2))
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))
    assert isinstance(MaxPool2x2(), nn.MaxPool2d)


def test_training_a_conv6_on_real_images_is_bit_identical_to_nn_maxpool2d():
    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    x = F.interpolate(pack.images[:32].float() / 255, size=32).repeat(1, 3, 1, 1)
    y = pack.targets[:32]
    torch.manual_seed(0)
    ours = plugins.get("models", "conv6").build(10, 3, 32, 0.25)
    theirs = copy.deepcopy(ours)
    for i, module in enumerate(theirs.features):
        if isinstance(module, MaxPool2x2):
            theirs.features[i] = nn.MaxPool2d(2)
    assert sum(type(m) is MaxPool2x2 for m in ours.modules()) == 3
    assert sum(type(m) is nn.MaxPool2d for m in theirs.modules()) == 3
    for model in (ours, theirs):
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    start = plugins.get("models", "conv6").build(10, 3, 32, 0.25)
    a, b = ours.state_dict(), theirs.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], start.state_dict()["features.0.weight"])  # it trained
