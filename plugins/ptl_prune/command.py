"""``ptl prune``: flags map onto recipe keys; without ``--recipe`` a bundled recipe is chosen.

With no flags the method's quickstart runs (bundled Fashion-MNIST pack, CPU, minutes). Naming a
``--dataset`` (and ``--model``) starts from the paper's recipe for it instead, so
``ptl prune --method iterand --model conv6 --dataset cifar10`` is ``iterand-conv6-cifar10``; the
other flags then override single keys. This module stays light: torch is imported by the run.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ptl_cli import options

Method = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional here
    typer.Option("--method", "-m", help="Pruner: {choices:pruners}."),
]


def default_recipe(method: str, model: str | None, dataset: str | None) -> str:
    """The most specific bundled recipe for the flags given: ``<method>-<model>-<dataset>``, then
    ``<method>-<dataset>`` (the paper's settings there), then ``<method>-quickstart``, then the
    shared ``prune-quickstart`` (a third-party pruner with its own defaults)."""
    from ptl_cli import recipes

    names = recipes.available()
    candidates = [f"{method}-{model}-{dataset}"] if model and dataset else []
    candidates += [f"{method}-{dataset}"] if dataset else []
    candidates += [f"{method}-quickstart", "prune-quickstart"]
    return next((c for c in candidates if c in names), "prune-quickstart")


def _opt(help_text: str, *names: str) -> Any:
    return typer.Option(*names, help=help_text)


@options.with_common
def prune(
    method: Method = None,
    model: Annotated[Optional[str], _opt("Model: {choices:models}.")] = None,  # noqa: UP045
    dataset: Annotated[Optional[str], _opt("Dataset: {choices:datasets}.")] = None,  # noqa: UP045
    data_dir: Annotated[Optional[str], _opt("Where the dataset is.")] = None,  # noqa: UP045
    download: Annotated[bool, _opt("Download the dataset if missing.")] = False,
    sparsity: Annotated[
        Optional[float],  # noqa: UP045
        _opt(
            "Fraction p of the weights pruned: of each layer with --sparsity-scope layer (the default), "
            "of all pruned layers together with --sparsity-scope global."
        ),
    ] = None,
    sparsity_scope: Annotated[
        Optional[str],  # noqa: UP045
        _opt(
            "layer: every layer keeps its own top 1-p; global: one top-k over all layers' scores "
            "(exact in total, each layer's share free). edge-popup and iterand."
        ),
    ] = None,
    epochs: Annotated[Optional[int], _opt("Training epochs.")] = None,  # noqa: UP045
    batch_size: Annotated[Optional[int], _opt("Global batch size.")] = None,  # noqa: UP045
    lr: Annotated[Optional[float], _opt("Learning rate.")] = None,  # noqa: UP045
    width: Annotated[Optional[float], _opt("Width factor of the model.")] = None,  # noqa: UP045
    rerand_freq: Annotated[Optional[int], _opt("IteRand: K_per, steps between re-draws.")] = None,  # noqa: UP045
    rerand_lambda: Annotated[Optional[float], _opt("IteRand: r, re-draw probability.")] = None,  # noqa: UP045
    weight_init: Annotated[
        Optional[str],  # noqa: UP045
        _opt("kaiming_uniform | signed_constant | kaiming_normal."),
    ] = None,
    score_abs: Annotated[
        Optional[bool],  # noqa: UP045
        typer.Option("--score-abs/--no-score-abs", help="Rank |S| instead of S."),
    ] = None,
    *,
    common: options.Common,
) -> None:
    """Prune a randomly initialized network (edge-popup, IteRand) or train it densely (sgd)."""
    from ptl_cli import plugins
    from ptl_cli.launch import launch

    method_name = plugins.get("pruners", method or "iterand").name
    default = default_recipe(method_name, model, dataset)
    overrides = {
        "pruner.name": method,
        "pruner.params.sparsity": sparsity,
        "pruner.params.sparsity_scope": sparsity_scope,
        "pruner.params.rerand_freq": rerand_freq,
        "pruner.params.rerand_lambda": rerand_lambda,
        "pruner.params.weight_init": weight_init,
        "pruner.params.score_abs": score_abs,
        "model.name": model,
        "model.width": width,
        "data.dataset": dataset,
        "data.data_dir": data_dir,
        "data.download": True if download else None,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "train.lr": lr,
    }
    launch("prune", common, default, overrides)
