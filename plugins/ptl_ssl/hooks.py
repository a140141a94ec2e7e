"""Registers the built-in SSL algorithms (entry point ``ssl = "ptl_ssl.hooks"``).

Factories are ``"module:Class"`` strings so that listing them never imports torch; each class is
called as ``Class(num_classes, **params)`` with the parameters validated against its schema
(FlexMatch also takes ``num_unlabeled``, which ptl passes to factories that accept it). Each
description names the paper first, so that ``ptl list ssl`` says where an algorithm comes from.
"""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl

#: name -> (module:Class, description with its paper, parameter schema in ``ptl_ssl.params``).
ALGORITHMS: dict[str, tuple[str, str, str | None]] = {
    "fixmatch": (
        "ptl_ssl.fixmatch:FixMatch",
        "FixMatch (Sohn et al., NeurIPS 2020): confident weak-view pseudo labels supervise the strong view",
        "FixMatchParams",
    ),
    "flexmatch": (
        "ptl_ssl.flexmatch:FlexMatch",
        "FlexMatch (Zhang et al., NeurIPS 2021): FixMatch with class-wise thresholds from "
        "per-sample pseudo labels",
        "FlexMatchParams",
    ),
    "freematch": (
        "ptl_ssl.freematch:FreeMatch",
        "FreeMatch (Wang et al., ICLR 2023): self-adaptive global and class-wise thresholds, fairness loss",
        "FreeMatchParams",
    ),
    "uda": (
        "ptl_ssl.uda:UDA",
        "UDA (Xie et al., NeurIPS 2020): sharpened weak-view predictions as soft targets for the strong view",
        "UDAParams",
    ),
    "meanteacher": (
        "ptl_ssl.meanteacher:MeanTeacher",
        "Mean Teacher (Tarvainen & Valpola, NeurIPS 2017): MSE between the student and an EMA "
        "teacher on two weak views",
        "MeanTeacherParams",
    ),
    "pseudolabel": (
        "ptl_ssl.pseudolabel:PseudoLabel",
        "Pseudo-Label (Lee, ICML workshop 2013): confident hard predictions as targets on the same view",
        "PseudoLabelParams",
    ),
    "softmatch": (
        "ptl_ssl.softmatch:SoftMatch",
        "SoftMatch (Chen et al., ICLR 2023): pseudo labels weighed by a truncated Gaussian of "
        "their aligned confidence",
        "SoftMatchParams",
    ),
    "adamatch": (
        "ptl_ssl.adamatch:AdaMatch",
        "AdaMatch (Berthelot et al., ICLR 2022): distribution alignment and a threshold relative to "
        "the labeled confidence",
        "AdaMatchParams",
    ),
    "dash": (
        "ptl_ssl.dash:Dash",
        "Dash (Xu et al., ICML 2021): unlabeled samples selected by their loss under a shrinking threshold",
        "DashParams",
    ),
    "defixmatch": (
        "ptl_ssl.defixmatch:DeFixMatch",
        "DeFixMatch (Schmutz et al., 2022): FixMatch minus the same consistency term on labeled "
        "data, which removes its bias",
        "DeFixMatchParams",
    ),
    "pimodel": (
        "ptl_ssl.pimodel:PiModel",
        "Pi-Model (Laine & Aila, ICLR 2017): MSE between the predictions on two weak views, ramped up",
        "PiModelParams",
    ),
    "vat": (
        "ptl_ssl.vat:VAT",
        "VAT (Miyato et al., TPAMI 2018): consistency under the most damaging small perturbation, "
        "plus entropy minimization",
        "VATParams",
    ),
    "mixmatch": (
        "ptl_ssl.mixmatch:MixMatch",
        "MixMatch (Berthelot et al., NeurIPS 2019): sharpened guesses from two weak views, mixup "
        "across both batches",
        "MixMatchParams",
    ),
    "comatch": (
        "ptl_ssl.comatch:CoMatch",
        "CoMatch (Li et al., ICCV 2021): pseudo labels and a contrastive graph of projected "
        "embeddings, smoothed through a memory queue",
        "CoMatchParams",
    ),
    "simmatch": (
        "ptl_ssl.simmatch:SimMatch",
        "SimMatch (Zheng et al., CVPR 2022): pseudo labels refined by similarities to a memory bank "
        "of labeled embeddings, and an instance-similarity loss",
        "SimMatchParams",
    ),
    "remixmatch": (
        "ptl_ssl.remixmatch:ReMixMatch",
        "ReMixMatch (Berthelot et al., ICLR 2020): aligned, sharpened guesses, mixup across both "
        "batches, a strong-view consistency term and rotation prediction",
        "ReMixMatchParams",
    ),
    "crmatch": (
        "ptl_ssl.crmatch:CRMatch",
        "CRMatch (Fan et al., IJCV 2023): FixMatch with a weak/strong feature-consistency head and "
        "rotation prediction",
        "CRMatchParams",
    ),
    "supervised": (
        "ptl_ssl.supervised:Supervised",
        "Supervised baseline: labeled cross-entropy only (the scratch baseline)",
        None,
    ),
}


@hookimpl
def ptl_register_ssl_algorithms(register: Any) -> None:
    from ptl_ssl import params  # pydantic: paid when algorithms are listed or built, not by --help

    for name, (factory, description, schema) in ALGORITHMS.items():
        register(
            name,
            factory,
            description=description,
            params=getattr(params, schema) if schema else None,
        )
