"""UDA's sharpened targets, confidence mask and soft cross-entropy on fixed logits."""

from __future__ import annotations

import math

import torch

from ptl_ssl.uda import UDA, soft_targets

WEAK = [[2.0, 0.0, 0.0], [0.3, 0.0, 0.1], [0.0, 0.0, 4.0]]
STRONG = [[1.0, 0.0, -1.0], [0.0, 2.0, 0.0], [0.5, 0.5, 0.0]]


def _softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    exps = [math.exp(z / temperature) for z in row]
    return [e / sum(exps) for e in exps]


def test_targets_are_softmax_over_temperature_and_mask_uses_unsharpened_confidence():
    targets, mask = soft_targets(torch.tensor(WEAK), temperature=0.4, threshold=0.8)
    for row, got in zip(WEAK, targets.tolist(), strict=True):
        assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(got, _softmax(row, 0.4), strict=True))
    # Row 0: softmax max 0.787 < 0.8, although its sharpened max (0.989) is far above it.
    expected = [float(max(_softmax(row)) >= 0.8) for row in WEAK]
    assert expected == [0.0, 0.0, 1.0]
    assert mask.tolist() == expected


def test_loss_equals_hand_computation(logits_model, as_images):
    algo = UDA(num_classes=3, temperature=0.4, threshold=0.5, lambda_u=3.0)
    labeled, targets = [[0.0, 2.0, 0.0]], [1]
    loss, logs = algo.loss(
        logits_model(3),
        {"weak": as_images(labeled)},
        torch.tensor(targets),
        {"weak": as_images(WEAK), "strong": as_images(STRONG)},
        step=5,
        total_steps=10,
    )
    loss_u = 0.0
    for weak_row, strong_row in zip(WEAK, STRONG, strict=True):
        if max(_softmax(weak_row)) >= 0.5:
            log_p = [math.log(p) for p in _softmax(strong_row)]
            loss_u -= sum(t * lp for t, lp in zip(_softmax(weak_row, 0.4), log_p, strict=True))
    loss_u /= len(WEAK)
    loss_x = -math.log(_softmax(labeled[0])[1])
    assert math.isclose(logs["loss_u"].item(), loss_u, rel_tol=1e-5)
    assert math.isclose(logs["mask_ratio"].item(), 2 / 3, rel_tol=1e-6)
    assert math.isclose(loss.item(), loss_x + 3.0 * loss_u, rel_tol=1e-5)
