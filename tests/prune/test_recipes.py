"""The bundled prune recipes: all valid, the paper's grid complete, the schedules as specified."""

from __future__ import annotations

import math

import pytest

from ptl_cli import plugins, recipes
from ptl_prune.command import default_recipe
from ptl_prune.schedule import lr_at


def _resolved(name: str):
    return recipes.resolve(name, plugins.get("workflows", "prune").params).model


def test_every_bundled_prune_recipe_validates():
    names = [n for n, p in recipes.available().items() if "recipes/prune" in p.as_posix()]
    assert len(names) > 70
    for name in names:
        assert _resolved(name).kind == "prune"


@pytest.mark.parametrize("model", ["conv6", "resnet18", "resnet34"])
def test_cifar10_grid(model):
    p, lr, wd = (0.5, 0.3, 1e-4) if model == "conv6" else (0.6, 0.1, 5e-4)
    for width, suffix in ((0.25, "-w0.25"), (0.5, "-w0.5"), (1.0, ""), (2.0, "-w2")):
        for method in ("edge-popup", "iterand"):
            for init, tag in (("kaiming_uniform", ""), ("signed_constant", "-sc")):
                r = _resolved(f"{method}-{model}{tag}{suffix}-cifar10")
                assert (r.model.name, r.model.width, r.data.dataset) == (model, width, "cifar10")
                assert r.pruner.params["sparsity"] == p and r.pruner.params["weight_init"] == init
                assert not r.pruner.params["bn_affine"] and (r.train.lr, r.train.weight_decay) == (lr, wd)
                assert r.train.epochs == 100 and r.train.batch_size == 128 and r.data.val_fraction == 0.1
                assert r.augment.crop == "random-resized" and r.augment.pad == 4 and r.augment.flip
                if method == "iterand":
                    assert (r.pruner.params["rerand_freq"], r.pruner.params["rerand_lambda"]) == (300, 0.1)
        sgd = _resolved(f"sgd-{model}{suffix}-cifar10")
        assert sgd.pruner.name == "sgd" and sgd.train.lr == (0.01 if model == "conv6" else 0.1)


def test_imagenet_recipes_and_schedule():
    for depth in (34, 50, 101):
        r = _resolved(f"iterand-resnet{depth}-imagenet")
        assert r.model.name == f"torchvision:resnet{depth}" and r.pruner.params["sparsity"] == 0.7
        assert (r.pruner.params["rerand_freq"], r.pruner.params["weight_init"]) == (1000, "signed_constant")
        assert (r.train.epochs, r.train.warmup_epochs, r.train.tail_epochs) == (105, 5, 5)
    schedule = [lr_at(e, 105, 0.1, "cosine", 5, 5, 1e-5) for e in range(105)]
    assert schedule[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # linear warm-up
    assert schedule[5] == pytest.approx(0.1)  # then 95 epochs of cosine
    assert schedule[99] == pytest.approx(0.05 * (1 + math.cos(math.pi * 94 / 95)))
    assert schedule[100:] == [1e-5] * 5  # the tail
    assert lr_at(50, 100, 0.3) == pytest.approx(0.15)  # plain cosine, per epoch


def test_flags_pick_the_most_specific_recipe():
    assert default_recipe("iterand", None, None) == "iterand-quickstart"
    assert default_recipe("iterand", "conv6", "cifar10") == "iterand-conv6-cifar10"
    assert default_recipe("edge-popup", "conv4", "cifar10") == "edge-popup-cifar10"
    assert default_recipe("sgd", None, "imagenet") == "sgd-imagenet"
    assert default_recipe("someones-pruner", None, None) == "prune-quickstart"
