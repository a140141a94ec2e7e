"""The supermask mechanism: exact per-layer sparsity, tie-breaking, the straight-through gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ptl_prune import supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.supermask import kept_mask, kth_smallest, masked_weight, num_pruned

from .conftest import build


@pytest.mark.parametrize("n", [1, 7, 1000, 70_001, 300_000])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.6, 0.99])
def test_exactly_round_pn_pruned(n, p):
    scores = torch.randn(n, generator=torch.Generator().manual_seed(n))
    kept = kept_mask(scores, num_pruned(n, p))
    assert int((~kept).sum()) == num_pruned(n, p) == int(p * n + 0.5)
    if 0 < num_pruned(n, p) < n:  # the pruned ones are exactly the smallest
        assert scores[~kept].max() < scores[kept].min()


def test_ties_are_broken_by_position_deterministically():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0, 1.0])
    # prune 2: the 0.0, then the earliest of the tied 1.0s
    assert kept_mask(scores, 2).tolist() == [False, True, True, False, True, True]
    assert kept_mask(scores, 4).tolist() == [False, False, False, False, True, True]
    # a large all-tied tensor (the CPU fast path): the first ones go, still exactly k
    flat = torch.zeros(200_000)
    kept = kept_mask(flat, 123_457)
    assert int((~kept).sum()) == 123_457 and not kept[:123_457].any() and kept[123_457:].all()
    few_values = torch.randint(0, 3, (150_001,), generator=torch.Generator().manual_seed(0)).float()
    first, second = kept_mask(few_values, 75_000), kept_mask(few_values.clone(), 75_000)
    assert torch.equal(first, second) and int((~first).sum()) == 75_000


@pytest.mark.parametrize("n", [100_000, 1_000_003])
def test_fast_cpu_selection_equals_kthvalue(n):
    gen = torch.Generator().manual_seed(1)
    for values in (
        torch.randn(n, generator=gen),
        torch.rand(n, generator=gen) ** 8,
        -torch.rand(n, generator=gen),
    ):
        for k in (1, n // 3, n // 2, n - 1, n):
            assert kth_smallest(values, k) == values.kthvalue(k).values


@pytest.mark.parametrize("n", [5, 1000, 100_001])
def test_accelerator_selection_path_is_exact(n):
    """The path accelerators take (topk-based k-th value, the tie fix applied unconditionally),
    run here on the CPU: the same threshold as kthvalue and the same mask as the CPU path."""
    gen = torch.Generator().manual_seed(n)
    for values in (torch.randn(n, generator=gen), torch.randint(0, 4, (n,), generator=gen).float()):
        for k in sorted({1, 2, n // 3, n // 2, n // 2 + 1, n - 1, n}):
            threshold = supermask.kth_smallest_topk(values, k)
            assert threshold == values.kthvalue(k).values
            if k < n:
                kept = supermask._break_ties(values, values > threshold, threshold, n - k)
                assert torch.equal(kept, kept_mask(values, k))


def test_straight_through_gradient_matches_autograd(fashion):
    """dL/dS == dL/d(W⊙m) ⊙ W, with dL/d(W⊙m) computed by autograd on a plain leaf tensor."""
    images, labels = fashion
    images, labels = images[:16], labels[:16]
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    head = nn.Linear(4 * 28 * 28, 10, bias=False)
    scores = torch.randn_like(conv.weight, generator=torch.Generator().manual_seed(3))
    mask = supermask.attach(conv, scores.clone(), sparsity=0.5, score_abs=False)
    F.cross_entropy(head(F.relu(conv(images)).flatten(1)), labels).backward()

    kept = mask.kept()
    w = supermask.original(conv).detach()
    effective = (w * kept).requires_grad_(True)
    F.cross_entropy(head(F.relu(F.conv2d(images, effective, padding=1)).flatten(1)), labels).backward()
    assert torch.allclose(mask.scores.grad, effective.grad * w, rtol=1e-5, atol=1e-8)
    assert supermask.original(conv).grad is None  # no weight gradient in score-only mode


def test_straight_through_gradient_with_score_abs():
    """With |S| ranking the gradient reaches S through the absolute value (hidden-networks)."""
    gen = torch.Generator().manual_seed(4)
    w, s, x = (torch.randn(6, 5, generator=gen) for _ in range(3))
    kept = kept_mask(s.abs(), 15)
    leaf = s.clone().requires_grad_(True)
    (masked_weight(w, leaf, kept, True) @ x.T).square().sum().backward()
    reference = s.clone().requires_grad_(True)
    straight = kept.float() + reference.abs() - reference.abs().detach()  # value m, gradient through |S|
    (w * straight @ x.T).square().sum().backward()
    assert torch.allclose(leaf.grad, reference.grad)


def test_every_layer_of_a_real_model_is_pruned_exactly():
    model = EdgePopup(sparsity=0.6).prepare(build("conv4"), seed=0)
    layers = list(supermask.masked_layers(model))
    assert len(layers) == len(supermask.prunable_layers(model)) == 7  # 4 convs + 3 linear, first and last
    for _, _, module, mask in layers:
        n = mask.scores.numel()
        assert int((~mask.kept()).sum()) == num_pruned(n, 0.6)
        assert module.weight.shape == mask.scores.shape
        assert int((module.weight == 0).sum()) == num_pruned(n, 0.6)  # the forward really uses W ⊙ m


def test_first_last_and_per_layer_overrides():
    pruner = EdgePopup(
        sparsity=0.5, prune_first_layer=False, prune_last_layer=False, layer_sparsity={"classifier.3": 0.9}
    )
    model = pruner.prepare(build("conv4"), seed=0)
    rates = {name: mask.sparsity for _, name, _, mask in supermask.masked_layers(model)}
    assert "features.0" not in rates and "classifier.5" not in rates  # first and last stay dense
    assert rates["classifier.3"] == 0.9 and rates["features.2"] == 0.5
    kept, total = pruner.counts(model)
    assert kept < total and pruner.sparsity(model) == pytest.approx(1 - kept / total)


def test_batchnorm_is_non_affine_and_only_scores_train():
    model = EdgePopup(sparsity=0.6).prepare(build("resnet18", width=0.25), seed=0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(not bn.affine and bn.weight is None for bn in bns)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith("parametrizations.weight.0.scores") for name in trainable)
    assert all(m.bias is None or not m.bias.any() for _, m in supermask.prunable_layers(model))

    affine = EdgePopup(sparsity=0.6, bn_affine=True).prepare(build("resnet18", width=0.25), seed=0)
    names = {name for name, p in affine.named_parameters() if p.requires_grad}
    assert any(name.endswith("bn1.weight") for name in names)


def test_any_torchvision_classifier_is_wrapped_without_code_changes(fashion):
    images, labels = fashion
    model = EdgePopup(sparsity=0.5).prepare(build("torchvision:mobilenet_v3_small"), seed=0)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert len(list(supermask.masked_layers(model))) == len(layers) > 50  # grouped convs, SE blocks, head
    for _, _, _, mask in supermask.masked_layers(model):
        assert int((~mask.kept()).sum()) == num_pruned(mask.scores.numel(), 0.5)
    loss = F.cross_entropy(model(images[:4]), labels[:4])
    loss.backward()
    assert all(mask.scores.grad is not None for *_, mask in supermask.masked_layers(model))
