"""The component kinds: one entry per kind, read by the registry, the contracts, the checks and
the scaffold.

Each kind is filled by one hook, builds through one documented factory call, returns one
protocol and is checked by one ``ptl_cli.testing`` function; keeping all of that in one row means
a new kind is one entry here (plus the hook, the protocol, the check and, if plugins should be
scaffolded for it, the templates that the entry names).

Protocols and checks are named, not imported: ``ptl_cli.contracts`` and ``ptl_cli.testing``
read this module, so importing them here would make a cycle, and ``testing`` imports torch.
This module imports nothing of ptl's: anything may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple


@dataclass(frozen=True)
class Scaffold:
    """What ``ptl plugins new --kind NAME`` writes for this kind (templates in ``templates/NAME``)."""

    name: str  # the ``--kind`` value and the templates' folder
    module: str  # the component's module in the generated package
    description: str
    usage: str  # a command that uses the component, for the README (``{component}`` filled in)


class Kind(NamedTuple):
    """One component kind. A tuple whose first two items are ``(hook, label)``, as
    ``registry.KINDS`` values were before this table existed."""

    hook: str  # the hookspec that registers components of this kind
    label: str  # how messages name one component ("SSL algorithm 'fixmatch'")
    protocol: str  # the class in ptl_cli.contracts that a built component satisfies
    factory_call: str  # how ptl calls the factory (docs/plugins/reference.md)
    check: str | None = None  # the function in ptl_cli.testing that checks a component
    #: Keyword arguments ptl passes only to a callable whose signature accepts them, per member
    #: (``"factory"`` or a protocol method): see ``ptl_cli.contracts.optional_arguments``.
    optional_arguments: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    #: Whether the spec's ``params`` are the factory's keyword arguments; a workflow's ``params``
    #: is its recipe schema instead, and its factory takes no arguments.
    params_to_factory: bool = True
    scaffold: Scaffold | None = None


#: Every component kind, by the name ``ptl list KIND`` and ``plugins.get(KIND, ...)`` take.
KINDS: dict[str, Kind] = {
    "models": Kind(
        hook="ptl_register_models",
        label="model",
        protocol="Model",
        factory_call="factory(num_classes, in_channels, image_size, width=1.0, **params)",
        check="check_model",
        scaffold=Scaffold("model", "model", "A small CNN architecture", "ptl prune --model {component}"),
    ),
    "datasets": Kind(
        hook="ptl_register_datasets",
        label="dataset",
        protocol="ImageDataset",
        factory_call="factory(root, split, download, **params)",
        check="check_dataset",
        scaffold=Scaffold(
            "dataset",
            "dataset",
            "A dataset of oriented sine gratings, one orientation per class",
            "ptl prune --dataset {component}",
        ),
    ),
    "pruners": Kind(
        hook="ptl_register_pruners",
        label="pruner",
        protocol="Pruner",
        factory_call="factory(**params)",
        check="check_pruner",
        optional_arguments={"configure": ("epochs",)},
        scaffold=Scaffold(
            "pruner",
            "pruner",
            "A pruner that keeps a random fixed mask per layer and trains the kept weights",
            "ptl prune --method {component} --sparsity 0.5",
        ),
    ),
    "ssl": Kind(
        hook="ptl_register_ssl_algorithms",
        label="SSL algorithm",
        protocol="SSLAlgorithm",
        factory_call="factory(num_classes, **params)",
        check="check_ssl",
        optional_arguments={
            "factory": ("num_labeled", "num_unlabeled"),
            "loss": ("unlabeled_index", "labeled_index"),
        },
        scaffold=Scaffold(
            "ssl",
            "algorithm",
            "An SSL algorithm: entropy minimization on the unlabeled batch",
            "ptl transfer --ssl {component}",
        ),
    ),
    "generators": Kind(
        hook="ptl_register_generators",
        label="generator",
        protocol="Generator",
        factory_call="factory(device, **params)",
        check="check_generator",
        scaffold=Scaffold(
            "generator",
            "generator",
            "A weight-free conditional generator: class prototypes plus latent variation",
            "ptl transfer --generator {component}",
        ),
    ),
    "classifiers": Kind(
        hook="ptl_register_classifiers",
        label="source classifier",
        protocol="SourceClassifier",
        factory_call="factory(device, **params)",
        check="check_classifier",
    ),
    "workflows": Kind(
        hook="ptl_register_workflows",
        label="workflow",
        protocol="Workflow",
        factory_call="factory()",
        params_to_factory=False,
    ),
    "loggers": Kind(
        hook="ptl_register_loggers",
        label="logger",
        protocol="Logger",
        factory_call="factory(run_dir, run_id, resuming, **params)",
        check="check_logger",
        scaffold=Scaffold(
            "logger",
            "logger",
            "An experiment logger that writes every metric of a run to a CSV file",
            "ptl prune --log {component}",
        ),
    ),
}
