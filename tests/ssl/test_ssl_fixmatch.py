"""FixMatch's pseudo labels, mask and loss against values computed by hand."""

from __future__ import annotations

import math

import torch

from ptl_ssl.fixmatch import FixMatch, pseudo_labels


def _ce(logits: list[float], label: int) -> float:
    return math.log(sum(math.exp(z) for z in logits)) - logits[label]


def _max_softmax(logits: list[float], temperature: float = 1.0) -> float:
    exps = [math.exp(z / temperature) for z in logits]
    return max(exps) / sum(exps)


WEAK = [[5.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 6.0], [0.0, 3.2, 0.0]]
STRONG = [[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, -1.0, 2.0]]


def test_mask_is_max_softmax_at_least_threshold():
    labels, mask = pseudo_labels(torch.tensor(WEAK), threshold=0.95)
    expected = [float(_max_softmax(row) >= 0.95) for row in WEAK]
    assert expected == [1.0, 0.0, 1.0, 0.0]  # the fixture really mixes both cases
    assert mask.tolist() == expected
    assert labels.tolist() == [0, 0, 2, 1]


def test_temperature_changes_the_confidence_not_the_label():
    logits = torch.tensor([[0.5, 0.0, 0.0]])
    assert pseudo_labels(logits, 0.5, temperature=1.0)[1].item() == 0.0  # 0.452 < 0.5
    labels, mask = pseudo_labels(logits, 0.5, temperature=0.5)  # 0.576 >= 0.5
    assert mask.item() == 1.0 and labels.item() == 0


def test_loss_equals_hand_computation(logits_model, as_images):
    algo = FixMatch(num_classes=3, threshold=0.95, lambda_u=2.0)
    labeled_logits, targets = [[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]], [0, 2]
    loss, logs = algo.loss(
        logits_model(3),
        {"weak": as_images(labeled_logits)},
        torch.tensor(targets),
        {"weak": as_images(WEAK), "strong": as_images(STRONG)},
        step=0,
        total_steps=10,
    )
    loss_x = sum(_ce(row, y) for row, y in zip(labeled_logits, targets, strict=True)) / 2
    # Rows 0 and 2 are confident (labels 0 and 2); the mean still divides by all 4 samples.
    loss_u = (_ce(STRONG[0], 0) + _ce(STRONG[2], 2)) / 4
    assert math.isclose(logs["loss_x"].item(), loss_x, rel_tol=1e-6)
    assert math.isclose(logs["loss_u"].item(), loss_u, rel_tol=1e-6)
    assert math.isclose(logs["mask_ratio"].item(), 0.5, rel_tol=1e-6)
    assert math.isclose(loss.item(), loss_x + 2.0 * loss_u, rel_tol=1e-6)


def test_unlabeled_gradient_flows_through_the_strong_view_only(logits_model, as_images):
    model = logits_model(3)
    weak = as_images(WEAK).requires_grad_()
    strong = as_images(STRONG).requires_grad_()
    loss, _ = FixMatch(3, threshold=0.0).loss(
        model,
        {"weak": as_images([[1.0, 0.0, 0.0]])},
        torch.tensor([0]),
        {"weak": weak, "strong": strong},
        0,
        1,
    )
    loss.backward()
    assert weak.grad is not None and torch.count_nonzero(weak.grad) == 0  # the target is detached
    assert torch.count_nonzero(strong.grad) > 0
