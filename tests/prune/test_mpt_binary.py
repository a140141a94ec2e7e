"""MPT-1/1's BatchNorm before each sign (``binary_batchnorm``), as biprop's ``*_BinAct`` networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ptl_cli.errors import UserError
from ptl_prune.mpt import MPT, BinaryActivation, binarize_activations

from .conftest import build, train_steps


def _signs(model: nn.Module) -> list[BinaryActivation]:
    return [m for m in model.modules() if isinstance(m, BinaryActivation)]


def test_a_batchnorm_sized_by_the_layer_before_each_sign(fashion):
    images, _ = fashion
    model = MPT(sparsity=0.5, activations="binary").prepare(build("conv2", width=0.25), seed=0)
    signs = _signs(model)
    assert [type(s.norm) for s in signs] == [nn.BatchNorm2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.BatchNorm1d]
    assert [s.norm.num_features for s in signs] == [16, 16, 64, 64]  # conv channels, then linear features
    assert all(not s.norm.affine and s.norm.track_running_stats for s in signs)  # like the method's other BN
    # what the sign receives is the batch-normalized pre-activation: per channel mean 0, variance 1
    seen = []
    signs[0].norm.register_forward_hook(lambda module, args, out: seen.append(out))
    model.train()
    model(images[:32])
    assert seen[0].mean((0, 2, 3)).abs().max() < 1e-5
    assert (seen[0].var((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    # without it the same network computes other logits from the same weights and scores
    plain = MPT(sparsity=0.5, activations="binary", binary_batchnorm=False).prepare(build("conv2", 0.25), 0)
    assert all(s.norm is None for s in _signs(plain))
    plain.train()
    assert not torch.allclose(plain(images[:32]), model(images[:32]))


def test_trained_stats_move_and_serve_evaluation(fashion):
    images, labels = fashion
    pruner = MPT(sparsity=0.5, activations="binary", bn_affine=True)
    model = pruner.prepare(build("conv2", width=0.25), seed=0)
    norms = [s.norm for s in _signs(model)]
    assert all(n.affine for n in norms)
    trainable = {id(p) for p in pruner.trainable_parameters(model)}
    assert all(id(n.weight) in trainable and id(n.bias) in trainable for n in norms)
    before = [n.bias.detach().clone() for n in norms]
    train_steps(model, pruner, images, labels, steps=3, batch=16)
    for norm, bias in zip(norms, before, strict=True):
        assert int(norm.num_batches_tracked) == 3
        assert norm.running_mean.abs().max() > 0 and (norm.running_var - 1).abs().max() > 0
        assert not torch.equal(norm.bias.detach(), bias)  # bn_affine: the shift trains with the scores
    model.eval()
    first = model(images[:8])
    assert torch.equal(first, model(images[:8]))  # running statistics, not the batch's
    assert torch.allclose(model(images[:4]), first[:4], atol=1e-5)  # no sample depends on the others


def test_sizes_that_do_not_fit_fail_in_one_line():
    with pytest.raises(UserError, match="ReLU '0' has none before it"):
        binarize_activations(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), batchnorm=True)
    binarize_activations(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), batchnorm=False)  # no size needed
    # a ReLU registered after a layer it does not follow: refused at the first forward, in one line
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 5), nn.Sequential(nn.ReLU()))
    model.forward = lambda x: model[2](model[0](x))  # type: ignore[method-assign]
    binarize_activations(model, batchnorm=True)
    with pytest.raises(UserError, match="has 5 channels, sized by layer '1'.*shape \\(2, 3\\)"):
        model(torch.randn(2, 4))
