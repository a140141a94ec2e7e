"""The supervised baseline asks for no unlabeled data and ignores whatever it is given."""

from __future__ import annotations

import math

import torch

from ptl_ssl.supervised import Supervised


def test_needs_no_unlabeled_view_and_ignores_unlabeled_data(logits_model, as_images):
    algo = Supervised(num_classes=3)
    assert algo.unlabeled_views == ()
    model = logits_model(3)
    labeled = {"weak": as_images([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])}
    targets = torch.tensor([0, 1])
    alone, logs = algo.loss(model, labeled, targets, {}, 0, 1)
    junk = {"weak": torch.randn(7, 3, 9, 9), "strong": torch.randn(2, 1, 4, 4)}
    with_junk, _ = algo.loss(model, labeled, targets, junk, 0, 1)
    expected = (math.log(math.exp(2) + 2) - 2 + math.log(2 + math.e) - 0.0) / 2
    assert torch.equal(alone, with_junk)
    assert math.isclose(alone.item(), expected, rel_tol=1e-6)
    assert set(logs) == {"loss_x"}
