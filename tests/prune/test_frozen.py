"""Partial search in a frozen network (Otsuka et al.): seeded frozen parts, scores for the rest only."""

from __future__ import annotations

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
    with pytest.raises(UserError, match="does not search part of a frozen network"):
        Multicoated(frozen_pruned=0.1)


def test_cli_prune_resume_export_and_ticket(cli, show, tmp_path):
    """The named method (its quickstart: a quarter frozen pruned, a quarter kept, global |S|) with
    IteRand's re-draws added: resumed bit-identical, and its ticket rebuilds it."""
    args = ["--method", "partial-search", "--rerand-lambda", "0.1", "--rerand-freq", "3", *TINY]
    whole = tmp_path / "whole"
    code, _, err = cli("prune", *args, "--out", whole)
    assert code == 0, err
    summary = show(whole)
    assert summary["metrics"]["sparsity"] == pytest.approx(0.5, abs=1e-5)  # exact over all layers
    assert summary["recipe"]["pruner"]["params"]["frozen_kept"] == 0.25
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
