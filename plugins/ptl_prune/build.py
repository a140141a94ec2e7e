"""Building a run's network and pruner from plain data (a recipe, or the ``arch`` in an export).

The same two functions serve training, exports and tickets, so a file written by one can always
be turned back into the same network by the others.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ptl_cli import plugins


def arch_of(model_section: Any, info: Any) -> dict[str, Any]:
    """Everything needed to rebuild the unwrapped architecture (JSON-serializable)."""
    return {
        "model": model_section.name,
        "width": float(model_section.width),
        "params": dict(model_section.params),
        "num_classes": int(info.num_classes),
        "in_channels": int(info.channels),
        "image_size": int(info.image_size),
    }


def build_model(arch: dict[str, Any]) -> nn.Module:
    """The plain (unpruned) network described by ``arch``, through the model registry."""
    spec = plugins.get("models", arch["model"])
    return spec.build(
        arch["num_classes"],
        arch["in_channels"],
        arch["image_size"],
        arch["width"],
        params=arch.get("params") or {},
        where=f"model {arch['model']}",
    )


def build_pruner(pruner: dict[str, Any]) -> Any:
    """A pruner from a recipe's ``[pruner]`` table: ``name`` and ``params``, or ``method`` and its
    parameters flat beside it as runs finished before that spelling recorded it (``final.pt``).
    A validated ``PrunerSection`` (``recipe.pruner``) is taken as its plain data."""
    if hasattr(pruner, "model_dump"):
        pruner = pruner.model_dump()
    if "name" in pruner:
        name, params = pruner["name"], dict(pruner.get("params") or {})
    else:
        name, params = pruner["method"], {k: v for k, v in pruner.items() if k != "method"}
    return plugins.get("pruners", name).build(params=params, where=f"pruner {name}")
