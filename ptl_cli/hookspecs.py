"""The hooks a ptl plugin can implement (entry-point group ``ptl``).

Every component hook receives ``register``, a :class:`ptl_cli.registry.Register` bound to one
component kind. Call it once per component::

    @hookimpl
    def ptl_register_pruners(register):
        register("my-pruner", "my_pkg.pruner:MyPruner", description="...", params=MyParams)

Hooks must stay cheap: they run whenever ptl lists or looks up components, so import heavy
modules (torch, diffusers) inside factories, not at module level. The component protocols each
kind's factory must return are in :mod:`ptl_cli.contracts`.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ptl")


@hookspec
def ptl_register_models(register: Any) -> None:
    """Register network architectures.

    Factory: ``factory(num_classes, in_channels, image_size, width=1.0, **params) -> nn.Module``.
    """


@hookspec
def ptl_register_datasets(register: Any) -> None:
    """Register image datasets.

    Factory: ``factory(root, split, download, **params) -> contracts.ImageDataset``.
    """


@hookspec
def ptl_register_pruners(register: Any) -> None:
    """Register pruning methods (edge-popup, IteRand, dense SGD, ...).

    Factory: ``factory(**params) -> contracts.Pruner``.
    """


@hookspec
def ptl_register_ssl_algorithms(register: Any) -> None:
    """Register semi-supervised learning algorithms (FixMatch, UDA, ...).

    Factory: ``factory(num_classes, **params) -> contracts.SSLAlgorithm``.
    """


@hookspec
def ptl_register_generators(register: Any) -> None:
    """Register conditional source generators (BigGAN, diffusers, ...).

    Factory: ``factory(device, **params) -> contracts.Generator``.
    """


@hookspec
def ptl_register_classifiers(register: Any) -> None:
    """Register source classifiers (the network trained on the unavailable source data).

    Factory: ``factory(device, **params) -> contracts.SourceClassifier``.
    """


@hookspec
def ptl_register_workflows(register: Any) -> None:
    """Register run kinds (``prune``, ``transfer``, ...): what ``ptl resume``/``ptl export`` call.

    Factory: ``factory() -> contracts.Workflow``; ``params`` is the workflow's recipe schema.
    """


@hookspec
def ptl_register_commands(app: Any) -> None:
    """Add commands to the ``ptl`` Typer app (``app.command()(fn)`` or ``app.add_typer(...)``).

    Keep the command module light: import torch inside the command function.
    """
