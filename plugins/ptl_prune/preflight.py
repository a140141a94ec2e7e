"""Checks of a prune recipe that need the network's layers, made before any data is loaded.

``plan`` (``--dry-run``, and every new run before it starts) calls :func:`check`, so a
``layer_sparsity`` pattern that names no layer, or settings under which no layer is pruned
(nothing to train: edge-popup and IteRand train scores only), fail in the same words with and
without ``--dry-run``. The network is built on the meta device with placeholder data sizes
(layer names do not depend on them) and without pretrained weights; recipes that prune every
layer at a positive rate need no network, so their plan still imports no torch.
"""

from __future__ import annotations

from typing import Any

from ptl_cli.errors import UserError


def nothing_to_train(method: str, model: str) -> str:
    return (
        f"pruner {method} leaves nothing to train on {model} (no layer is pruned, so there are no "
        "scores); set pruner.params.sparsity above 0 or a pruner.params.layer_sparsity entry above 0"
    )


def split_batch(batch_size: int, world_size: int) -> int:
    """This rank's share of the global batch, or the error naming the world size (torchrun)."""
    if batch_size % world_size:
        raise UserError(
            f"train.batch_size {batch_size} does not split over {world_size} processes; "
            "choose a multiple of the world size"
        )
    return batch_size // world_size


def needs_network(params: dict[str, Any]) -> bool:
    """Whether the pruner's settings could name no layer or prune none (else every layer gets a
    positive rate, so scores exist whatever the network); pruners without per-layer rates: no."""
    if "layer_sparsity" not in params or "sparsity" not in params:
        return False
    return bool(
        params["layer_sparsity"]
        or params["sparsity"] == 0
        or not params.get("prune_first_layer", True)
        or not params.get("prune_last_layer", True)
    )


def layer_names(model_section: Any, channels: int) -> tuple[list[str], bool] | None:
    """The Conv/Linear layer names of the recipe's network (and whether it has affine BatchNorm),
    or None when it cannot be built on the meta device (some torchvision networks initialize
    from data, e.g. RegNet-Y): the run then checks it."""
    import torch
    from torch import nn

    from ptl_prune.build import build_model
    from ptl_prune.supermask import prunable_layers

    params = {k: v for k, v in model_section.params.items() if k != "weights"}  # same layers
    arch = {
        "model": model_section.name,
        "width": float(model_section.width),
        "params": params,
        "num_classes": 10,
        "in_channels": channels,
        "image_size": 224,  # large enough for every built-in network; no weights are allocated
    }
    try:
        with torch.device("meta"):
            model = build_model(arch)
    except Exception:  # names and parameters were checked with the recipe; sizes are placeholders
        return None
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine for m in model.modules())
    return [name for name, _ in prunable_layers(model)], bn


def check(recipe: Any) -> None:
    """Raise the error the run would raise for a batch the processes cannot share (under
    torchrun, from its environment), unmatched patterns or a network with no scores."""
    from ptl_cli.engine.distributed import from_env

    split_batch(recipe.train.batch_size, from_env().world_size)
    params = recipe.pruner_params
    if params.get("activations") == "binary":  # MPT-1/1 swaps nn.ReLU modules: the model needs some
        _require_relu_modules(recipe)
    if recipe.method in ("gem-miner", "gemminer"):  # its schedule is in epochs of the recipe
        from ptl_prune.build import build_pruner

        build_pruner(recipe.pruner.model_dump()).check_epochs(recipe.train.epochs)
        if params.get("finetune_epochs") and from_env().world_size > 1:
            raise UserError(
                "pruner 'gem-miner' fine-tunes weights that get no gradient while the scores search, "
                "which DistributedDataParallel cannot bucket; run its fine-tuning in one process"
            )
    if (params.get("frozen_pruned") or params.get("frozen_kept")) and (
        params.get("frozen_distribution") == "erk" or needs_network(params)
    ):
        _check_frozen(recipe)
    if not needs_network(params):
        return
    from ptl_prune.build import build_pruner

    pruner = build_pruner(recipe.pruner.model_dump())
    built = layer_names(recipe.model, 3)
    if built is None:
        return
    names, has_bn = built
    if any(not _matches(pattern, names) for pattern in params["layer_sparsity"]):
        grey = (layer_names(recipe.model, 1) or ([], False))[0]  # grey data may wrap the network
        if all(_matches(pattern, names) or _matches(pattern, grey) for pattern in params["layer_sparsity"]):
            return
    pruner._check_patterns(names)
    rates = [pruner.layer_rate(name, index, len(names)) for index, name in enumerate(names)]
    if not any(rate > 0 for rate in rates) and not (params.get("bn_affine") and has_bn):
        raise UserError(nothing_to_train(recipe.method, recipe.model.name))


def _matches(pattern: str, names: list[str]) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


def _require_relu_modules(recipe: Any) -> None:
    """The error MPT's binary activations raise on a model without ``nn.ReLU`` modules, or (with
    ``binary_batchnorm``) with a ReLU that no Conv/Linear layer precedes (built on the meta device,
    as :func:`layer_names` does)."""
    import torch

    from ptl_prune.build import build_model
    from ptl_prune.mpt import binarize_activations

    arch = {
        "model": recipe.model.name,
        "width": float(recipe.model.width),
        "params": {k: v for k, v in recipe.model.params.items() if k != "weights"},
        "num_classes": 10,
        "in_channels": 3,
        "image_size": 224,
    }
    try:
        with torch.device("meta"):
            model = build_model(arch)
    except Exception:  # the run checks it
        return
    binarize_activations(model, bool(recipe.pruner_params.get("binary_batchnorm", True)))  # the run's error


def _check_frozen(recipe: Any) -> None:
    """The error a partial search raises when its frozen counts do not fit the layers' rates
    (ERK-shaped counts depend on every layer's shape, so the network is built on the meta device
    with the dataset's real sizes; a dataset whose sizes depend on its files is checked by the run)."""
    import torch

    from ptl_cli import plugins
    from ptl_prune.build import build_model, build_pruner
    from ptl_prune.supermask import prunable_layers

    facts = plugins.get("datasets", recipe.data.dataset).facts(recipe.data.params, "data.params")
    if facts is None:
        return
    arch = {
        "model": recipe.model.name,
        "width": float(recipe.model.width),
        "params": {k: v for k, v in recipe.model.params.items() if k != "weights"},
        "num_classes": int(facts.num_classes),
        "in_channels": int(facts.channels),
        "image_size": int(facts.image_size),
    }
    try:
        with torch.device("meta"):
            model = build_model(arch)
    except Exception:  # the run checks it
        return
    shapes = {name: tuple(module.weight.shape) for name, module in prunable_layers(model)}
    build_pruner(recipe.pruner.model_dump()).frozen_counts(shapes)
