"""Weight and score distributions (fan-in, ReLU gain), seeded draws, and what the ranking key is."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptl_prune import inits, supermask
from ptl_prune.edgepopup import EdgePopup

from .conftest import build


def _ks_uniform(z: torch.Tensor, bound: float) -> float:
    """Kolmogorov-Smirnov distance of ``z`` to U(-bound, bound)."""
    cdf = (z.sort().values + bound) / (2 * bound)
    return float((cdf - torch.arange(1, z.numel() + 1) / z.numel()).abs().max())


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (256, 4096), (96, 1, 3, 3)])  # conv, linear, depthwise
def test_weight_distributions_use_fan_in_and_relu_gain(shape):
    fan_in = math.prod(shape[1:])
    assert inits.fan_in(shape) == fan_in == nn.init._calculate_correct_fan(torch.empty(shape), "fan_in")
    std = math.sqrt(2.0 / fan_in)
    n = math.prod(shape)

    ku = inits.initial_weight("kaiming_uniform", torch.Size(shape), seed=0, layer=3)
    bound = math.sqrt(6.0 / fan_in)
    assert float(ku.abs().max()) <= bound and _ks_uniform(ku.flatten(), bound) < 1.63 / math.sqrt(n)

    kn = inits.initial_weight("kaiming_normal", torch.Size(shape), seed=0, layer=3)
    assert abs(float(kn.mean())) < 5 * std / math.sqrt(n) and abs(float(kn.std()) / std - 1) < 0.05

    sc = inits.initial_weight("signed_constant", torch.Size(shape), seed=0, layer=3)
    assert sc.unique().tolist() == pytest.approx([-std, std])
    assert abs(float((sc > 0).float().mean()) - 0.5) < 5 * 0.5 / math.sqrt(n)

    scores = inits.initial_scores("kaiming_uniform", torch.Size(shape), seed=0, layer=3)
    assert float(scores.abs().max()) <= bound and not torch.equal(scores, ku)  # own stream, same law


def test_prepare_draws_every_layer_from_seed_and_index_only():
    """Same seed: the same network whatever the global RNG; another seed or layer: other draws."""

    def prepared(seed: int) -> nn.Module:
        return EdgePopup(sparsity=0.5, weight_init="signed_constant").prepare(build("conv4", 0.25), seed=seed)

    torch.manual_seed(1)
    first = prepared(5)
    torch.manual_seed(2)
    second, other = prepared(5), prepared(6)
    a, b, c = (first.state_dict(), second.state_dict(), other.state_dict())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # weights and scores
    weights = [k for k in a if k.endswith("parametrizations.weight.original")]
    assert len(weights) == 7 and all(not torch.equal(a[k], c[k]) for k in weights)
    for index, (name, module) in enumerate(supermask.prunable_layers(first)):
        w = supermask.original(module)
        assert torch.equal(w, inits.initial_weight("signed_constant", w.shape, 5, index)), name


def test_ranking_uses_the_signed_score_by_default_and_abs_with_score_abs():
    layer = nn.Linear(10, 1, bias=False)
    scores = torch.tensor([[-9.0, -8.0, -7.0, 0.1, 0.2, 0.3, 0.4, 0.5, 6.0, 7.0]])
    signed = supermask.attach(layer, scores.clone(), sparsity=0.5, score_abs=False)
    assert signed.kept().tolist() == [[False] * 5 + [True] * 5]  # large negative scores are pruned
    layer = nn.Linear(10, 1, bias=False)
    absolute = supermask.attach(layer, scores.clone(), sparsity=0.5, score_abs=True)
    assert absolute.kept().tolist() == [[True, True, True] + [False] * 5 + [True, True]]
