"""Partial search in a frozen network (Otsuka et al.): seeded frozen parts, scores for the rest only."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.utils import parametrize

from ptl_cli.errors import UserError
from ptl_cli.testing import check_pruner
from ptl_prune import frozen, supermask
from ptl_prune.edgepopup import EdgePopup
from ptl_prune.iterand import IteRand
from ptl_prune.mpt import MPT
from ptl_prune.multicoated import Multicoated

from .conftest import build, train_steps

TINY = [
    "--model", "conv2", "--width", "0.25", "--epochs", "2", "--batch-size", "32",
    "--set", "data.train_limit=256", "--set", "data.test_limit=100", "--set", "train.checkpoint_every=4",
    "--quiet",
]  # fmt: skip


def _prepared(pruner, seed: int = 0):
    return pruner.prepare(build("conv2", width=0.25), seed=seed)


def test_pattern_is_seeded_per_layer_with_exact_counts():
    a = frozen.pattern((64, 32, 3, 3), 0.3, 0.2, seed=0, layer=1)
    n = a.numel()
    assert int((a == -1).sum()) == round(0.3 * n) and int((a == 1).sum()) == round(0.2 * n)
    assert torch.equal(a, frozen.pattern((64, 32, 3, 3), 0.3, 0.2, seed=0, layer=1))
    assert not torch.equal(a, frozen.pattern((64, 32, 3, 3), 0.3, 0.2, seed=0, layer=2))
    assert not torch.equal(a, frozen.pattern((64, 32, 3, 3), 0.3, 0.2, seed=1, layer=1))


def test_erk_freezes_large_layers_more_with_the_network_wide_fractions_asked():
    shapes = [tuple(m.weight.shape) for _, m in supermask.prunable_layers(build("conv6"))]
    sizes = [math.prod(s) for s in shapes]
    erk = frozen.layer_counts(shapes, 0.3, 0.2, "erk")
    uniform = frozen.layer_counts(shapes, 0.3, 0.2, "uniform")
    for counts in (erk, uniform):  # the fractions asked, over all layers, up to each layer's rounding
        assert abs(sum(p for p, _ in counts) - 0.3 * sum(sizes)) <= len(sizes) / 2
        assert abs(sum(k for _, k in counts) - 0.2 * sum(sizes)) <= len(sizes) / 2
        assert all(p + k <= n for (p, k), n in zip(counts, sizes, strict=True))
    assert erk != uniform
    pruned = [p / n for (p, _), n in zip(erk, sizes, strict=True)]
    frozen_all = [(p + k) / n for (p, k), n in zip(erk, sizes, strict=True)]
    # ERK: the density 1 - f of a layer ∝ Σ dims / Π dims (the first and last layers, small, are
    # left whole); the largest layer (4096 → 256) is frozen most
    ratio = [sum(s) / n for s, n in zip(shapes, sizes, strict=True)]
    free = [i for i, f in enumerate(pruned) if f > 0]
    assert pruned[0] == pruned[-1] == 0 and free
    eps = [(1 - pruned[i]) / ratio[i] for i in free]
    assert max(eps) - min(eps) < 1e-3 * max(eps)  # the same ε wherever ERK's rounding allows
    largest = max(range(len(sizes)), key=sizes.__getitem__)
    assert max(range(len(sizes)), key=frozen_all.__getitem__) == largest
    assert frozen.layer_counts(shapes, 0, 0, "erk") == [(0, 0)] * len(shapes)


def test_erk_patterns_train_with_exact_global_sparsity(fashion):
    images, labels = fashion
    pruner = EdgePopup(
        sparsity=0.6, sparsity_scope="global", frozen_pruned=0.3, frozen_kept=0.2, frozen_distribution="erk"
    )
    model = _prepared(pruner)
    shapes = [mask.shape for *_, mask in supermask.masked_layers(model)]
    expected = frozen.layer_counts(shapes, 0.3, 0.2, "erk")
    got = [
        (int((m.frozen == -1).sum()), int((m.frozen == 1).sum())) for *_, m in supermask.masked_layers(model)
    ]
    assert got == expected
    train_steps(model, pruner, images, labels, steps=3, lr=1.0, batch=16)
    kept_total = n_total = 0
    for *_, mask in supermask.masked_layers(model):
        kept = mask.kept()
        assert kept[mask.frozen == 1].all() and not kept[mask.frozen == -1].any()
        assert mask.scores.numel() == int((mask.frozen == 0).sum())
        kept_total, n_total = kept_total + int(kept.sum()), n_total + kept.numel()
    assert n_total - kept_total == supermask.num_pruned(n_total, 0.6)  # exact over all layers


def test_frozen_parts_stay_decided_and_only_the_rest_is_searched(fashion):
    images, labels = fashion
    plain = _prepared(EdgePopup(sparsity=0.6))
    pruner = EdgePopup(sparsity=0.6, frozen_pruned=0.3, frozen_kept=0.2)
    model = _prepared(pruner)
    for (*_, full), (*_, mask) in zip(
        supermask.masked_layers(plain), supermask.masked_layers(model), strict=True
    ):
        searched = mask.frozen == 0
        assert mask.scores.numel() == int(searched.sum()) < 0.51 * full.scores.numel()  # the saving
        assert torch.equal(mask.scores.detach(), full.scores.detach()[searched])  # the same draws there
    train_steps(model, pruner, images, labels, steps=4, lr=1.0, batch=16)
    for *_, module, mask in supermask.masked_layers(model):
        kept, n = mask.kept(), mask.frozen.numel()
        assert int(kept.sum()) == n - supermask.num_pruned(n, 0.6)  # exact count, frozen included
        assert kept[mask.frozen == 1].all() and not kept[mask.frozen == -1].any()
        searched = mask.frozen == 0
        # the searched part keeps its own top: every kept searched score beats every pruned one
        s = mask.scores.detach()
        assert float(s[kept[searched]].min()) > float(s[~kept[searched]].max())
        w = supermask.original(module)
        assert torch.equal(module.weight, torch.where(kept, w, torch.zeros(())))
    # the gradient of a score is edge-popup's, at its weight's position
    layer = model.features[0]
    mask = supermask.supermask_of(layer)
    model.zero_grad(set_to_none=True)
    with parametrize.cached():
        used = layer.weight
        used.retain_grad()
        torch.nn.functional.cross_entropy(model(images[:16]), labels[:16]).backward()
    expected = (used.grad * supermask.original(layer))[mask.frozen == 0]
    assert torch.allclose(mask.scores.grad, expected, rtol=1e-6, atol=1e-12)


def test_score_memory_shrinks_with_the_frozen_fraction(fashion):
    images, labels = fashion
    sizes = {}
    for fraction in (0.0, 0.5):
        pruner = EdgePopup(sparsity=0.5, frozen_pruned=fraction / 2, frozen_kept=fraction / 2)
        model = _prepared(pruner)
        optimizer = train_steps(model, pruner, images, labels, steps=1, batch=16)
        sizes[fraction] = frozen.score_bytes(model, optimizer)
    full, half = sizes[0.0], sizes[0.5]
    n = full["scores"] // 4
    assert full == {"scores": 4 * n, "optimizer_state": 4 * n, "frozen_patterns": 0}
    assert abs(half["scores"] - 2 * n) <= 4 * 5 and half["optimizer_state"] == half["scores"]  # ±1 per layer
    assert half["frozen_patterns"] == n  # one int8 per weight


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("edge-popup", {"sparsity": 0.6, "frozen_pruned": 0.3, "frozen_kept": 0.2}),
        ("edge-popup", {"sparsity": 0.6, "frozen_pruned": 0.4, "sparsity_scope": "global"}),
        ("iterand", {"sparsity": 0.5, "frozen_pruned": 0.25, "frozen_kept": 0.25, "rerand_freq": 1}),
        ("mpt", {"sparsity": 0.5, "frozen_kept": 0.25}),
        ("partial-search", {}),
        ("partial-search", {"frozen_distribution": "erk", "rerand_lambda": 0.5, "rerand_freq": 1}),
    ],
)
def test_contract_resume_and_simulated_gpu(method, params):
    check_pruner(method, params)


def test_iterand_redraws_and_mpt_binarizes_on_top_of_a_frozen_network(fashion):
    pruner = IteRand(sparsity=0.5, frozen_pruned=0.25, frozen_kept=0.25, rerand_lambda=1.0, rerand_freq=1000)
    model = _prepared(pruner)
    before = {n: supermask.original(m).clone() for _, n, m, _ in supermask.masked_layers(model)}
    pruner.redraw(model, step=1000)
    for _, name, module, mask in supermask.masked_layers(model):
        moved = supermask.original(module) != before[name]
        assert moved[~mask.kept()].float().mean() > 0.99 and not moved[mask.frozen == 1].any()
    mpt = MPT(sparsity=0.5, frozen_kept=0.25)
    net = _prepared(mpt)
    layer = net.features[0]
    assert layer.weight.abs().unique().numel() == 2  # {0, α}: binarized as without a frozen part


def test_settings_that_cannot_hold_the_frozen_parts_fail_in_one_line(cli):
    code, _, err = cli(
        "prune",
        "--method",
        "edge-popup",
        "--sparsity",
        "0.3",
        "--set",
        "pruner.params.frozen_pruned=0.4",
        "--dry-run",
    )
    assert (
        code == 2 and "frozen_pruned 0.4 must be at most sparsity 0.3" in err and len(err.splitlines()) == 1
    )
    with pytest.raises(UserError, match="frozen_pruned 0.3 .at most the rate"):
        _prepared(EdgePopup(sparsity=0.5, frozen_pruned=0.3, layer_sparsity={"features.0": 0.2}))
    code, _, err = cli(
        "prune", "--method", "partial-search", "--set", "pruner.params.frozen_distribution=erk",
        "--set", "pruner.params.sparsity_scope=layer", "--set", "pruner.params.frozen_pruned=0.45",
        "--dry-run",
    )  # fmt: skip
    assert (
        code == 2 and "layer 'features.2' prunes 0.5" in err and "'erk'" in err and len(err.splitlines()) == 1
    )
    erk = ["--set", "pruner.params.frozen_distribution=erk"]
    assert cli("prune", "--method", "partial-search", *erk, "--dry-run")[0] == 0  # global: it fits
    with pytest.raises(UserError, match="does not search part of a frozen network"):
        Multicoated(frozen_pruned=0.1)


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
def test_cli_prune_resume_export_and_ticket(cli, show, tmp_path, distribution):
    """The named method (its quickstart: a quarter frozen pruned, a quarter kept, global |S|) with
    IteRand's re-draws added, in either frozen distribution: resumed bit-identical, and its ticket
    rebuilds it."""
    args = ["--method", "partial-search", "--rerand-lambda", "0.1", "--rerand-freq", "3", *TINY]
    args += ["--set", f"pruner.params.frozen_distribution={distribution}"]
    whole = tmp_path / "whole"
    code, _, err = cli("prune", *args, "--out", whole)
    assert code == 0, err
    summary = show(whole)
    assert summary["metrics"]["sparsity"] == pytest.approx(0.5, abs=1e-5)  # exact over all layers
    assert summary["recipe"]["pruner"]["params"]["frozen_kept"] == 0.25
    assert summary["recipe"]["pruner"]["params"]["frozen_distribution"] == distribution
    stopped = tmp_path / "stopped"
    assert cli("prune", *args, "--out", stopped, "--set", "train.stop_after_steps=5")[0] == 130
    code, _, err = cli("resume", stopped, "--quiet")
    assert code == 0, err
    a = torch.load(whole / "final.pt", weights_only=True)["model"]
    b = torch.load(stopped / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["features.0.parametrizations.weight.0.scores"].dim() == 1  # the searched scores only
    code, out, err = cli("export", whole, "--format", "ticket", "--out", tmp_path / "t.st", "--verify")
    assert code == 0 and "verified" in out, err
