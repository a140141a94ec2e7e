"""ptl-example's own tests: the contract checks from ptl_cli.testing plus each method's defining
property. Run them after installing the plugin: ``pip install -e '.[test]' && pytest``."""

from __future__ import annotations

import math

import pytest
import torch
from ptl_cli import plugins
from ptl_cli.testing import check_plugin_loads, check_pruner, check_ssl, tiny_net


def test_plugin_loads_with_both_hooks():
    check_plugin_loads("ptl-example", hooks=["ptl_register_pruners", "ptl_register_ssl_algorithms"])


def test_gmp_keeps_the_pruner_contract():
    # masks change at steps 2 and 4 of the check's 4 steps, so resume crosses a mask update
    check_pruner("gmp", {"sparsity": 0.8, "ramp_steps": 4, "update_every": 2})


def test_gmp_follows_the_cubic_ramp_exactly_per_layer():
    pruner = plugins.get("pruners", "gmp").build(
        params={"sparsity": 0.9, "ramp_steps": 10, "update_every": 5}
    )
    torch.manual_seed(0)
    net = pruner.prepare(tiny_net(), seed=0)
    masks = [m.parametrizations.weight[0].mask for m in net.modules() if hasattr(m, "parametrizations")]
    for step, expected in [(1, 0.0), (5, 0.9 * (1 - 0.5**3)), (7, 0.9 * (1 - 0.5**3)), (10, 0.9)]:
        pruner.after_step(net, step)
        for mask in masks:
            assert int(mask.numel() - mask.count_nonzero()) == int(expected * mask.numel() + 0.5)


def test_gmp_prunes_the_smallest_weights_and_never_revives_them():
    pruner = plugins.get("pruners", "gmp").build(params={"sparsity": 0.5, "ramp_steps": 2, "update_every": 1})
    torch.manual_seed(0)
    net = pruner.prepare(tiny_net(), seed=0)
    layer = net[0]
    pruner.after_step(net, 1)
    first = layer.parametrizations.weight[0].mask.clone()
    weight = layer.parametrizations.weight.original.detach().abs()
    assert weight[first.bool()].min() >= weight[~first.bool()].max()
    with torch.no_grad():
        layer.parametrizations.weight.original.mul_(-10.0)  # magnitudes change, pruned ones grow
    pruner.after_step(net, 2)
    assert not (layer.parametrizations.weight[0].mask.bool() & ~first.bool()).any()


def test_sat_fixmatch_keeps_the_ssl_contract():
    check_ssl("sat-fixmatch", {"ema": 0.9})


def test_sat_threshold_is_the_ema_of_the_mean_confidence():
    algo = plugins.get("ssl", "sat-fixmatch").build(4, params={"ema": 0.5})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(4))
        model[1].bias.zero_()
    weak = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]).view(2, 4, 1, 1)
    x = torch.zeros(1, 4, 1, 1)
    _, logs = algo.loss(model, {"weak": x}, torch.tensor([0]), {"weak": weak, "strong": weak}, 0, 10)
    p_max = math.exp(4) / (math.exp(4) + 3)
    expected = 0.5 * 0.25 + 0.5 * (p_max + 0.25) / 2
    assert logs["tau"].item() == pytest.approx(expected, rel=1e-6)
    assert logs["mask_ratio"].item() == pytest.approx(0.5)  # only the confident row passes
    assert algo.state_dict()["tau"].item() == pytest.approx(expected, rel=1e-6)
