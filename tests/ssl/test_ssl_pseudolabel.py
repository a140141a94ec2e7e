"""PseudoLabel's threshold, linear ramp-up and loss on fixed logits."""

from __future__ import annotations

import math

import pytest
import torch

from ptl_ssl.pseudolabel import PseudoLabel, linear_rampup

UNLABELED = [[4.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 3.5]]


def _ce(row: list[float], label: int) -> float:
    return math.log(sum(math.exp(z) for z in row)) - row[label]


@pytest.mark.parametrize(
    ("threshold", "mask"), [(0.95, [1.0, 0.0, 0.0]), (0.9, [1.0, 0.0, 1.0]), (0.0, [1.0, 1.0, 1.0])]
)
def test_threshold_selects_confident_samples(threshold, mask, logits_model, as_images):
    algo = PseudoLabel(3, threshold=threshold, rampup_fraction=0.0)
    labeled = {"weak": as_images([[1.0, 0.0, 0.0]])}
    loss, logs = algo.loss(logits_model(3), labeled, torch.tensor([0]), {"weak": as_images(UNLABELED)}, 0, 10)
    labels = [0, 1, 2]  # argmax of each row: the same view gives the target and the prediction
    loss_u = sum(m * _ce(row, y) for m, row, y in zip(mask, UNLABELED, labels, strict=True)) / 3
    assert math.isclose(logs["mask_ratio"].item(), sum(mask) / 3, rel_tol=1e-6)
    assert math.isclose(logs["loss_u"].item(), loss_u, rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(loss.item(), _ce([1.0, 0.0, 0.0], 0) + loss_u, rel_tol=1e-5)


def test_weight_ramps_up_linearly_over_the_fraction(logits_model, as_images):
    algo = PseudoLabel(3, threshold=0.0, lambda_u=2.0, rampup_fraction=0.4)
    batch = {"weak": as_images(UNLABELED)}
    weights = []
    for step in (0, 20, 40, 80, 100):
        _, logs = algo.loss(logits_model(3), batch, torch.tensor([0, 1, 2]), batch, step, 100)
        weights.append(logs["weight_u"].item())
    assert weights == pytest.approx([0.0, 1.0, 2.0, 2.0, 2.0])
    assert linear_rampup(7, 0) == 1.0
