"""Registers the pruners, the ``prune`` workflow, the ``ptl prune`` command and ``ptl bench prune``.

Factories are ``module:attr`` strings and the pydantic schemas are imported inside the hooks, so
``ptl --help`` pays for neither torch nor pydantic; listing pruners never imports torch.
"""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl


@hookimpl
def ptl_register_pruners(register: Any) -> None:
    from ptl_prune import params

    register(
        "edge-popup",
        "ptl_prune.edgepopup:EdgePopup",
        description="edge-popup: learn scores that select a subnetwork of frozen random weights",
        params=params.EdgePopupParams,
        aliases=("edgepopup",),
    )
    register(
        "iterand",
        "ptl_prune.iterand:IteRand",
        description="IteRand: edge-popup plus periodic random re-draws of the pruned weights",
        params=params.IteRandParams,
    )
    register(
        "mpt",
        "ptl_prune.mpt:MPT",
        description="MPT/biprop: edge-popup scores over binarized weights α·sign(W) (and sign activations)",
        params=params.MPTParams,
        aliases=("biprop",),
    )
    register(
        "signed-supermask",
        "ptl_prune.signed:SignedSupermaskPruner",
        description="signed supermask: masks in {-1, 0, 1} keep, drop or sign-flip frozen random weights",
        params=params.SignedSupermaskParams,
    )
    register(
        "multicoated",
        "ptl_prune.multicoated:Multicoated",
        description="multicoated supermasks: nested top-|S| masks summed, a kept weight counted 1..C times",
        params=params.MulticoatedParams,
    )
    register(
        "partial-search",
        "ptl_prune.partial:PartialSearch",
        description="partial search: edge-popup on a network with seeded parts frozen as pruned or kept",
        params=params.PartialSearchParams,
    )
    register(
        "gem-miner",
        "ptl_prune.gemminer:GemMiner",
        description="Gem-Miner: scores in [0, 1] rounded at 0.5, an L2 regulariser, rounds to the target",
        params=params.GemMinerParams,
        aliases=("gemminer",),
    )
    register(
        "sgd",
        "ptl_prune.sgd:DenseSGD",
        description="dense weight training (the baseline the pruning methods are compared with)",
        params=params.SGDParams,
    )


@hookimpl
def ptl_register_workflows(register: Any) -> None:
    from ptl_prune.recipe import PruneRecipe

    register(
        "prune",
        "ptl_prune.workflow:PruneWorkflow",
        description="prune a randomly initialized network (edge-popup, IteRand) or train it densely",
        params=PruneRecipe,
    )


@hookimpl
def ptl_register_commands(app: Any) -> None:
    from ptl_prune.command import prune

    app.command("prune")(prune)


@hookimpl
def ptl_register_benchmarks(register: Any) -> None:
    from ptl_prune.bench import bench_prune

    register(
        "prune",
        bench_prune,
        description="dense and supermask steps, IteRand's re-draw, loader and augmentation",
        default=True,
    )
