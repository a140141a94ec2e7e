"""What each method may change: edge-popup only scores, IteRand only pruned weights, SGD weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ptl_prune import inits, supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.iterand import IteRand
from ptl_prune.sgd import DenseSGD

from .conftest import build, train_steps


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: supermask.original(m).detach().clone() for name, m in supermask.prunable_layers(model)}


def test_edge_popup_never_changes_weights(fashion):
    images, labels = fashion
    pruner = EdgePopup(sparsity=0.6)
    model = pruner.prepare(build("resnet18", width=0.25), seed=0)
    before = _weights(model)
    scores = {n: m.scores.detach().clone() for _, n, _, m in supermask.masked_layers(model)}
    stats = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    train_steps(model, pruner, images, labels, steps=2, batch=16)
    # the whole state dict: only scores and BatchNorm statistics may differ (biases, weights: never)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(state[k], v)}
    allowed = (".scores", ".running_mean", ".running_var", ".num_batches_tracked")
    assert all(k.endswith(allowed) for k in changed), sorted(changed)
    after = _weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # bit-identical to the initialization
    for index, (name, _) in enumerate(supermask.prunable_layers(model)):  # which is the seeded draw
        assert torch.equal(after[name], inits.initial_weight("kaiming_uniform", after[name].shape, 0, index))
    assert all(not torch.equal(scores[n], m.scores) for _, n, _, m in supermask.masked_layers(model))
    assert any(not torch.equal(stats[n], b) for n, b in model.named_buffers() if n in stats)


def test_sgd_baseline_trains_dense_weights(fashion):
    images, labels = fashion
    pruner = DenseSGD()
    model = pruner.prepare(build("conv2", width=0.25), seed=0)
    before = _weights(model)
    train_steps(model, pruner, images, labels, steps=2, lr=0.01)
    assert all(not torch.equal(before[n], w) for n, w in _weights(model).items())
    assert pruner.sparsity(model) == 0.0 and not list(supermask.masked_layers(model))


def _redraw_setup(fashion, **params):
    images, labels = fashion
    pruner = IteRand(sparsity=0.5, rerand_freq=1000, **params)
    model = pruner.prepare(build("conv2", width=0.25), seed=0)
    train_steps(model, pruner, images, labels, steps=2)  # scores move away from their init
    return model, pruner


@pytest.mark.parametrize("init", ["kaiming_uniform", "signed_constant", "kaiming_normal"])
def test_iterand_redraws_only_pruned_weights_at_rate_r(fashion, init):
    r = 0.1
    model, pruner = _redraw_setup(fashion, rerand_lambda=r, weight_init=init)
    before = _weights(model)
    scores = {n: m.scores.detach().clone() for _, n, _, m in supermask.masked_layers(model)}
    masks = {n: m.kept() for _, n, _, m in supermask.masked_layers(model)}
    pruner.redraw(model, step=300)
    changed_total = pruned_total = 0
    fresh = []
    for _, name, module, mask in supermask.masked_layers(model):
        after = supermask.original(module)
        redrawn = mask.sources == 1  # the positions the first re-draw wrote
        assert not (redrawn & masks[name]).any()  # only pruned weights are re-drawn...
        assert torch.equal(after != before[name], (after != before[name]) & redrawn)  # ...nothing else moves
        assert torch.equal(mask.scores, scores[name])  # scores untouched
        changed_total += int(redrawn.sum())
        pruned_total += int((~masks[name]).sum())
        fresh.append((after[redrawn], math.sqrt(2.0 / inits.fan_in(after.shape))))
    # about r of the pruned weights change: within 5 binomial standard deviations
    sd = math.sqrt(pruned_total * r * (1 - r))
    assert abs(changed_total - r * pruned_total) < 5 * sd, (changed_total, pruned_total)
    # new values follow the weight distribution (scaled per layer by its std)
    z = torch.cat([values / std for values, std in fresh])
    if init == "signed_constant":
        assert torch.allclose(z.abs(), torch.ones_like(z)) and abs(float((z > 0).float().mean()) - 0.5) < 0.05
    elif init == "kaiming_uniform":
        bound = math.sqrt(3.0)
        assert float(z.abs().max()) <= bound + 1e-5
        # Kolmogorov-Smirnov distance to U(-sqrt 3, sqrt 3) is small for this many draws
        sorted_z = z.sort().values
        cdf = (sorted_z + bound) / (2 * bound)
        ks = float((cdf - torch.arange(1, z.numel() + 1) / z.numel()).abs().max())
        assert ks < 1.63 / math.sqrt(z.numel())  # 1% critical value
    else:
        assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1.0) < 0.05


def test_rerand_rate_limits_eligible_weights(fashion):
    model, pruner = _redraw_setup(fashion, rerand_lambda=1.0, rerand_rate=0.5)
    before = _weights(model)
    eligible = {n: ~m.kept(0.5) for _, n, _, m in supermask.masked_layers(model)}
    pruner.redraw(model, step=300)
    for _, name, module, mask in supermask.masked_layers(model):
        changed = supermask.original(module) != before[name]
        assert torch.equal(changed, eligible[name])  # r = 1: every eligible weight, nothing else
        assert int(eligible[name].sum()) == supermask.num_pruned(mask.scores.numel(), 0.25)


def test_redraws_are_identical_for_identical_states_and_vary_with_step(fashion):
    """What keeps data-parallel ranks in step: re-draws depend on (seed, step) and state only."""
    first, pruner1 = _redraw_setup(fashion)
    second, pruner2 = _redraw_setup(fashion)
    torch.manual_seed(123)  # the global RNG must not matter
    pruner1.redraw(first, 300)
    torch.manual_seed(456)
    pruner2.redraw(second, 300)
    assert all(
        torch.equal(a, b) for a, b in zip(_weights(first).values(), _weights(second).values(), strict=True)
    )
    before = _weights(first)
    pruner1.redraw(first, 600)
    pruner2.redraw(second, 900)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(_weights(first).values(), _weights(second).values(), strict=True)
    )
    assert pruner1.events == [300, 600]
    assert any(not torch.equal(before[n], w) for n, w in _weights(first).items())


def test_redraw_schedule_in_iterations_and_per_epoch(fashion):
    images, labels = fashion
    pruner = IteRand(sparsity=0.5, rerand_freq=3)
    model = pruner.prepare(build("conv2", width=0.25), seed=0)
    train_steps(model, pruner, images, labels, steps=7)
    assert pruner.events == [3, 6]
    per_epoch = IteRand(sparsity=0.5, rerand_freq=2, rerand_freq_unit="epochs")
    per_epoch.configure(steps_per_epoch=4)
    model = per_epoch.prepare(build("conv2", width=0.25), seed=0)
    train_steps(model, per_epoch, images, labels, steps=8)
    assert per_epoch.events == [2, 4, 6, 8]  # twice per epoch
