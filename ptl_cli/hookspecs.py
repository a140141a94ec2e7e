"""The hooks a ptl plugin can implement (entry-point group ``ptl``).

Every component hook receives ``register``, a :class:`ptl_cli.registry.Register` bound to one
component kind. Call it once per component::

    @hookimpl
    def ptl_register_pruners(register):
        register("my-pruner", "my_pkg.pruner:MyPruner", description="...", params=MyParams)

``register(name, factory, description="", params=None, aliases=(), **meta)``: ``name`` is lower
case (``[a-z0-9][a-z0-9_.-]*``, optionally ending in ``:*`` to serve a whole prefix), ``factory``
a callable or a ``"module:attr"`` string, ``params`` a pydantic model (subclass
:class:`ptl_cli.schema.Params`) that validates the component's parameters before the factory
is called with them as keyword arguments.

Hooks must stay cheap: they run whenever ptl lists or looks up components, so import heavy
modules (torch, diffusers) inside factories, not at module level. Each hook fills one kind of
:data:`ptl_cli.kinds.KINDS`, which names the protocol (in :mod:`ptl_cli.contracts`) its factory
must return and the call ptl makes to the factory; a built component that lacks a member, or
whose methods cannot take the arguments ptl passes, is rejected with a message naming the plugin.
The guide, with one section per hook, is ``docs/plugins/reference.md``; ``ptl_cli.testing``
checks a component in a plugin's own tests.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("ptl")


@hookspec
def ptl_register_models(register: Any) -> None:
    """Register network architectures (used by ``ptl prune --model`` and ``ptl transfer --arch``).

    Factory: ``factory(num_classes, in_channels, image_size, width=1.0, **params) -> nn.Module``
    (:class:`ptl_cli.contracts.Model`): logits ``(B, num_classes)`` for normalized images.
    """


@hookspec
def ptl_register_datasets(register: Any) -> None:
    """Register image datasets (``--dataset``, ``--target``).

    Factory: ``factory(root, split, download, **params) -> contracts.ImageDataset``: uint8
    ``(C, H, W)`` items, int64 ``targets`` up front and a ``DatasetInfo``; ``split`` is
    ``"train"`` or ``"test"``; download only when ``download`` is true.
    """


@hookspec
def ptl_register_pruners(register: Any) -> None:
    """Register pruning methods (edge-popup, IteRand, dense SGD, ...) for ``ptl prune --method``.

    Factory: ``factory(**params) -> contracts.Pruner``. Recipes name it in ``[pruner] name`` and
    set the parameters in ``[pruner] params``; ``--sparsity`` sets ``sparsity``.
    """


@hookspec
def ptl_register_ssl_algorithms(register: Any) -> None:
    """Register semi-supervised learning algorithms (FixMatch, UDA, ...) for ``ptl transfer --ssl``.

    Factory: ``factory(num_classes, **params) -> contracts.SSLAlgorithm``; recipes set the
    parameters in ``[ssl] params``. A factory that accepts ``num_labeled``/``num_unlabeled``
    also gets the sizes of the labeled and unlabeled sets (``contracts.OPTIONAL_ARGUMENTS``).
    """


@hookspec
def ptl_register_generators(register: Any) -> None:
    """Register conditional source generators (BigGAN, diffusers, ...) for ``ptl transfer --generator``.

    Factory: ``factory(device, **params) -> contracts.Generator``; load weights here (from a
    local path, or a cache when online), never in the hook.
    """


@hookspec
def ptl_register_classifiers(register: Any) -> None:
    """Register source classifiers (the network trained on the unavailable source data).

    Factory: ``factory(device, **params) -> contracts.SourceClassifier``: an ``nn.Module`` that
    resizes and normalizes images in [0, 1] itself and gives ``K_s`` logits.
    """


@hookspec
def ptl_register_workflows(register: Any) -> None:
    """Register run kinds (``prune``, ``transfer``, ...): what ``ptl resume``/``ptl export`` call.

    Factory: ``factory() -> contracts.Workflow``; ``params`` is the workflow's recipe schema (a
    subclass of :class:`ptl_cli.recipes.RecipeBase`), and the name is the recipes' ``kind``.
    """


@hookspec
def ptl_register_loggers(register: Any) -> None:
    """Register experiment loggers (TensorBoard, MLflow, ...) for ``--log NAME`` / ``[compute] log``.

    Factory: ``factory(run_dir, run_id, resuming, **params) -> contracts.Logger``; on rank 0 it
    receives the resolved recipe, every metrics record and the report's PNGs, then ``close()``.
    ``metrics.jsonl`` stays the source of truth: a logger that raises is switched off, never the
    run. Declare an optional package with ``requires="module"`` (and ``extra="name"``).
    """


@hookspec
def ptl_register_commands(app: Any) -> None:
    """Add commands to the ``ptl`` Typer app (``app.command()(fn)`` or ``app.add_typer(...)``).

    Keep the command module light: import torch inside the command function. A run command
    takes the :mod:`ptl_cli.options` types and calls :func:`ptl_cli.launch.launch`.
    """


@hookspec
def ptl_register_benchmarks(register: Any) -> None:
    """Add a benchmark to ``ptl bench`` (``ptl bench NAME``): ``register(name, run,
    description="", default=False)``; ``default=True`` puts it in a bare ``ptl bench``.

    ``run(bench, *, option=default, ...) -> ptl_cli.bench.Report`` (or a list of them) gets a
    :class:`ptl_cli.bench.Bench`; its keyword-only parameters, annotated as Typer options,
    become options of ``ptl bench``. Import torch inside ``run``.
    """
