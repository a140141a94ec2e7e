"""The plugin's hooks: ptl imports this module (entry point ``ptl-example``) on every start.

Registering costs nothing: factories are ``"module:attr"`` strings imported when a run builds
the component, and the parameter schemas need only pydantic. No torch import here.
"""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl

from ptl_example import params as schema


@hookimpl
def ptl_register_pruners(register: Any) -> None:
    register(
        "gmp",
        "ptl_example.gmp:GradualMagnitudePruner",
        description="gradual magnitude pruning (Zhu & Gupta 2017): train weights, prune the smallest",
        params=schema.GMPParams,
    )


@hookimpl
def ptl_register_ssl_algorithms(register: Any) -> None:
    register(
        "sat-fixmatch",
        "ptl_example.satmatch:SATFixMatch",
        description="FixMatch with FreeMatch's self-adaptive global confidence threshold",
        params=schema.SATFixMatchParams,
    )
