"""``ptl transfer``: flags map onto recipe keys; the quickstart recipe is the default.

A flag that names a different component than the recipe (``--generator diffusers`` on a
BigGAN recipe) also clears that component's ``params``: they belonged to the one it replaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ptl_cli import options

DEFAULT_RECIPE = "transfer-quickstart"

Name = Optional[str]  # noqa: UP045 - typer reads the annotation at run time


def _opt(help_text: str, *names: str) -> Any:
    return typer.Option(*names, help=help_text)


@options.with_common
def transfer(
    generator: Annotated[Name, _opt("Source generator: {choices:generators}.")] = None,
    ssl: Annotated[Name, _opt("SSL algorithm: {choices:ssl}.")] = None,
    source_classifier: Annotated[Name, _opt("Source classifier: {choices:classifiers}.")] = None,
    target: Annotated[
        Name, _opt("Target dataset: {choices:datasets}; or a folder of images (path/<split>/<class>/).")
    ] = None,
    arch: Annotated[Name, _opt("Target architecture: {choices:models}.")] = None,
    width: Annotated[Optional[float], _opt("Width factor of the target architecture.")] = None,  # noqa: UP045
    labels_per_class: Annotated[Optional[int], _opt("Labeled target images per class.")] = None,  # noqa: UP045
    stages: Annotated[Name, _opt("Comma list of scratch,kd,pp,pssl,pp+pssl (default: all).")] = None,
    steps: Annotated[Optional[int], _opt("Optimizer steps of each target stage.")] = None,  # noqa: UP045
    pp_steps: Annotated[Optional[int], _opt("Optimizer steps of pseudo pre-training.")] = None,  # noqa: UP045
    data_dir: Annotated[Name, _opt("Where target datasets are (or are downloaded to).")] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Download the target dataset if missing.")
    ] = False,
    *,
    common: options.Common,
) -> None:
    """Transfer without source data: PP, PCS and P-SSL against scratch and KD baselines."""
    from ptl_cli.launch import launch

    overrides = recipe_overrides(
        common.recipe or DEFAULT_RECIPE,
        generator=generator,
        ssl=ssl,
        source_classifier=source_classifier,
        target=target,
        arch=arch,
        width=width,
        labels_per_class=labels_per_class,
        stages=stages,
        steps=steps,
        pp_steps=pp_steps,
        data_dir=data_dir,
        download=download or None,
    )
    launch("transfer", common, DEFAULT_RECIPE, overrides)


def recipe_overrides(recipe_ref: str, **flags: Any) -> dict[str, Any]:
    """Dotted recipe keys for the flags that were given."""
    from ptl_cli import recipes

    base, _ = recipes.load_raw(recipe_ref)
    out: dict[str, Any] = {}

    def component(flag: str, name_key: str, params_key: str, current: Any) -> None:
        value = flags.get(flag)
        if value is None:
            return
        out[name_key] = value
        if value != current:
            out[params_key] = {}

    source = base.get("source", {})
    component(
        "generator",
        "source.generator.name",
        "source.generator.params",
        source.get("generator", {}).get("name"),
    )
    component(
        "source_classifier",
        "source.classifier.name",
        "source.classifier.params",
        source.get("classifier", {}).get("name"),
    )
    component("ssl", "ssl.name", "ssl.params", base.get("ssl", {}).get("name"))
    component("arch", "model.name", "model.params", base.get("model", {}).get("name"))
    target = flags.get("target")
    if target is not None:
        if "/" in target or Path(target).expanduser().is_dir():
            out.update(
                {"target.dataset": "imagefolder", "target.params": {"path": target}, "target.classes": []}
            )
        else:
            out["target.dataset"] = target
            if target != base.get("target", {}).get("dataset"):
                out.update({"target.params": {}, "target.classes": []})
    if "model.name" in out and out["model.name"] != base.get("model", {}).get("name"):
        out["model.width"] = 1.0  # the recipe's width was chosen for its own architecture
    if flags.get("stages") is not None:
        out["stages"] = [s.strip() for s in flags["stages"].split(",") if s.strip()]
    simple = {
        "width": "model.width",
        "labels_per_class": "target.labels_per_class",
        "steps": "train.steps",
        "pp_steps": "pp.train.steps",
        "data_dir": "target.data_dir",
        "download": "target.download",
    }
    for flag, key in simple.items():
        if flags.get(flag) is not None:
            out[key] = flags[flag]
    return out
