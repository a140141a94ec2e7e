"""Registers the built-in SSL algorithms (entry point ``ssl = "ptl_ssl.hooks"``).

Factories are ``"module:Class"`` strings so that listing them never imports torch; each class is
called as ``Class(num_classes, **params)`` with the parameters validated against its schema
(FlexMatch also takes ``num_unlabeled``, which ptl passes to factories that accept it).
"""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl


@hookimpl
def ptl_register_ssl_algorithms(register: Any) -> None:
    from ptl_ssl import params  # pydantic: paid when algorithms are listed or built, not by --help

    register(
        "fixmatch",
        "ptl_ssl.fixmatch:FixMatch",
        description="FixMatch: confident weak-view pseudo labels supervise the strong view",
        params=params.FixMatchParams,
    )
    register(
        "flexmatch",
        "ptl_ssl.flexmatch:FlexMatch",
        description="FlexMatch: FixMatch with class-wise thresholds from per-sample pseudo labels",
        params=params.FlexMatchParams,
    )
    register(
        "freematch",
        "ptl_ssl.freematch:FreeMatch",
        description="FreeMatch: self-adaptive global and class-wise thresholds, fairness loss",
        params=params.FreeMatchParams,
    )
    register(
        "uda",
        "ptl_ssl.uda:UDA",
        description="UDA: sharpened weak-view predictions as soft targets for the strong view",
        params=params.UDAParams,
    )
    register(
        "meanteacher",
        "ptl_ssl.meanteacher:MeanTeacher",
        description="Mean Teacher: MSE between the student and an EMA teacher on two weak views",
        params=params.MeanTeacherParams,
    )
    register(
        "pseudolabel",
        "ptl_ssl.pseudolabel:PseudoLabel",
        description="Pseudo-Label: confident hard predictions as targets on the same view",
        params=params.PseudoLabelParams,
    )
    register(
        "supervised",
        "ptl_ssl.supervised:Supervised",
        description="Supervised baseline: labeled cross-entropy only (the scratch baseline)",
    )
