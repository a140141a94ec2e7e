"""The plan's network checks (ptl_prune.preflight) agree with what the run itself finds."""

from __future__ import annotations

import itertools

import pytest

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_prune import preflight
from ptl_prune.build import build_model, build_pruner

SETTINGS = list(
    itertools.product(
        ["conv2", "resnet18"],  # without and with BatchNorm
        [0.0, 0.5],  # sparsity
        [True, False],  # prune_first_layer and prune_last_layer
        [{}, {"classifier.*": 0.0}, {"features.0": 0.7}, {"clasifier.*": 0.9}, {"*": 0.0}, {"linear": 0.0}],
        [False, True],  # bn_affine
    )
)


def what_the_run_finds(recipe) -> str | None:
    """The run's own order: build the network, prepare it, refuse when nothing can train."""
    arch = {"model": recipe.model.name, "width": 0.25, "params": {}, "num_classes": 10}
    model = build_model({**arch, "in_channels": 1, "image_size": 28})
    pruner = build_pruner(recipe.pruner)
    try:
        model = pruner.prepare(model, 0)
    except UserError as exc:
        return str(exc)
    if not list(pruner.trainable_parameters(model)):
        return preflight.nothing_to_train(recipe.method, recipe.model.name)
    return None


@pytest.mark.parametrize(("model", "sparsity", "ends", "layers", "bn_affine"), SETTINGS)
def test_the_plan_refuses_exactly_what_the_run_refuses(model, sparsity, ends, layers, bn_affine):
    schema = plugins.get("workflows", "prune").params
    params = {
        "sparsity": sparsity,
        "prune_first_layer": ends,
        "prune_last_layer": ends,
        "layer_sparsity": layers,
        "bn_affine": bn_affine,
    }
    pruner = {"name": "edge-popup", "params": params}
    recipe = schema.model_validate({"pruner": pruner, "model": {"name": model, "width": 0.25}})
    try:
        preflight.check(recipe)
        planned = None
    except UserError as exc:
        planned = str(exc)
    assert planned == what_the_run_finds(recipe)


@pytest.mark.parametrize(
    ("model", "pruner", "expected"),
    [
        ("conv2", {"sparsity": 0.5}, None),
        ("conv2", {"sparsity": 0.0}, "leaves nothing to train on conv2"),
        ("conv2", {"layer_sparsity": {"clasifier.*": 0.9}}, "pattern 'clasifier.*' matches no"),
        ("resnet18", {"sparsity": 0.0, "bn_affine": True}, None),  # BatchNorm's scale and shift train
        ("conv2", {"sparsity": 0.0, "bn_affine": True}, "leaves nothing to train"),  # conv2 has none
    ],
)
def test_the_grid_holds_both_outcomes(model, pruner, expected):
    """The comparison above is not vacuous: the run refuses some settings, for either reason."""
    schema = plugins.get("workflows", "prune").params
    recipe = schema.model_validate(
        {"pruner": {"name": "edge-popup", "params": pruner}, "model": {"name": model}}
    )
    found = what_the_run_finds(recipe)
    assert (found is None) if expected is None else (expected in found)
