"""Gem-Miner (Sreenivasan et al. 2022): rounded scores, the regulariser, the rounds, fine-tuning."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.nn.utils import parametrize

from ptl_cli.testing import check_pruner
from ptl_prune import supermask
from ptl_prune.gemminer import GemMiner, finetune_lr_at

from .conftest import build, train_steps

TINY = [
    "--model", "conv2", "--width", "0.25", "--epochs", "3", "--batch-size", "32",
    "--set", "data.train_limit=256", "--set", "data.test_limit=100", "--set", "train.checkpoint_every=4",
    "--set", "pruner.params.prune_every=1", "--sparsity", "0.8", "--quiet",
]  # fmt: skip


def _prepared(pruner, seed: int = 0):
    return pruner.prepare(build("conv2", width=0.25), seed=seed)


def _records(run) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "metrics.jsonl").open()
    ]


def test_forward_rounds_clamped_scores_and_the_gradient_goes_straight_through(fashion):
    images, labels = fashion
    pruner = GemMiner(sparsity=0.5, lmbda=0.0)
    model = _prepared(pruner)
    layer = model.features[0]
    mask = supermask.supermask_of(layer)
    w = supermask.original(layer)
    assert float(mask.scores.detach().min()) >= 0.0 and float(mask.scores.detach().max()) <= 1.0  # U(0, 1)
    mask.flag[0] = False  # a unit the schedule dropped: no weight, no score gradient
    with parametrize.cached():
        used = layer.weight
        used.retain_grad()
        torch.nn.functional.cross_entropy(model(images[:16]), labels[:16]).backward()
    rounded = mask.flag & (mask.scores > 0.5)
    assert torch.equal(used, torch.where(rounded, w, torch.zeros(())))
    expected = used.grad * w * mask.flag
    assert torch.equal(mask.scores.grad, expected) and (mask.scores.grad[~rounded & mask.flag] != 0).any()
    assert w.grad is None  # the weights stay frozen while searching
    train_steps(
        model, pruner, images, labels, steps=3, lr=50.0, batch=16
    )  # a large step: scores leave [0, 1]
    for *_, m in supermask.masked_layers(model):
        assert (
            float(m.scores.detach().min()) == 0.0 and float(m.scores.detach().max()) == 1.0
        )  # clamped back, both ends hit


def test_regulariser_adds_two_lambda_s_to_the_step(fashion):
    """One plain SGD step with λ and without: the scores differ by exactly lr·2λ·S (as the loss term
    λ‖S‖² would), the reference's regulariser; the recipe's weight decay is separate."""
    images, labels = fashion
    after = {}
    for lmbda in (0.0, 0.01):
        pruner = GemMiner(sparsity=0.5, lmbda=lmbda)
        model = _prepared(pruner)
        start = supermask.supermask_of(model.features[0]).scores.detach().clone()
        optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=0.5)
        from ptl_cli import pruning

        pruning.train_step(pruner, model, optimizer, images[:16], labels[:16], 1)
        after[lmbda] = supermask.supermask_of(model.features[0]).scores.detach()
    inside = (after[0.0] > 0) & (after[0.0] < 1) & (after[0.01] > 0) & (after[0.01] < 1)  # unclamped
    assert torch.allclose((after[0.0] - after[0.01])[inside], (0.5 * 2 * 0.01 * start)[inside], atol=1e-6)


def test_rounds_reach_the_target_over_all_layers_and_never_revive(fashion):
    images, labels = fashion
    pruner = GemMiner(sparsity=0.9, prune_every=1, prune_every_unit="iterations", prune_rounds=3)
    assert pruner.round_rate() == pytest.approx(1 - 0.1 ** (1 / 3))
    model = _prepared(pruner)
    masks = [m for *_, m in supermask.masked_layers(model)]
    total = sum(m.flag.numel() for m in masks)
    flagged = []
    optimizer = None
    for step in range(5):  # rounds after steps 2, 3 and 4 (the first after prune_every + 1)
        before = [m.flag.clone() for m in masks]
        optimizer = train_steps(model, pruner, images, labels, steps=1, start=step, batch=16)
        assert all(
            torch.equal(b | m.flag, b) for b, m in zip(before, masks, strict=True)
        )  # only ever unflags
        flagged.append(sum(int(m.flag.sum()) for m in masks))
    assert optimizer is not None
    assert flagged[0] == total and flagged[3] == flagged[4]  # no round after step 1 or after step 4's
    assert flagged[1] > flagged[2] > flagged[3]
    assert flagged[3] <= 0.1 * total + 3 and flagged[3] >= 0.1 * total - 0.01 * total  # ceil per round, ties
    assert len({round(1 - int(m.flag.sum()) / m.flag.numel(), 2) for m in masks}) > 1  # global, not per layer
    assert pruner.sparsity(model) >= 0.9 - 1e-3  # the rounding at 0.5 may prune more


@pytest.mark.parametrize(
    "params",
    [
        {"sparsity": 0.8, "prune_every": 1, "prune_every_unit": "iterations", "prune_rounds": 2},
        {
            "sparsity": 0.6,
            "lmbda": 0.0,
            "prune_every": 1,
            "prune_every_unit": "iterations",
            "prune_rounds": 1,
        },
    ],
)
def test_contract_resume_and_simulated_gpu(params):
    check_pruner("gem-miner", params)


def test_finetune_lr_milestones_follow_the_reference():
    assert [finetune_lr_at(e, 150, 0.01) for e in (0, 79, 80, 119, 120)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.0001]
    )


def test_cli_prune_resume_export_and_ticket(cli, show, tmp_path):
    whole = tmp_path / "whole"
    code, _, err = cli("prune", "--method", "gem-miner", *TINY, "--out", whole)
    assert code == 0, err
    summary = show(whole)
    assert summary["metrics"]["sparsity"] >= 0.8 - 1e-3
    # stopped mid-epoch after the first round (after epoch 2 = step 16), resumed: bit-identical
    stopped = tmp_path / "stopped"
    code, _, _ = cli(
        "prune", "--method", "gem-miner", *TINY, "--out", stopped, "--set", "train.stop_after_steps=18"
    )
    assert code == 130
    code, _, err = cli("resume", stopped, "--quiet")
    assert code == 0, err
    a = torch.load(whole / "final.pt", weights_only=True)["model"]
    b = torch.load(stopped / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _records(stopped) == _records(whole)
    code, out, err = cli("export", whole, "--format", "ticket", "--out", tmp_path / "t.st", "--verify")
    assert code == 0 and "verified" in out, err
    code, out, err = cli("export", whole, "--format", "safetensors", "--out", tmp_path / "m.st", "--verify")
    assert code == 0, err
    weight = load_file(tmp_path / "m.st")["features.0.weight"]
    assert weight.abs().unique().numel() == 2  # signed-constant weights, some zeroed


def test_cli_finetune_trains_the_kept_weights_after_the_search(cli, show, tmp_path):
    run = tmp_path / "tuned"
    args = ["--set", "pruner.params.finetune_epochs=1", "--set", "pruner.params.finetune_lr=0.05"]
    code, _, err = cli("prune", "--method", "gem-miner", *TINY, *args, "--out", run)
    assert code == 0, err
    lrs = {r["epoch"]: r["lr"] for r in _records(run) if r.get("stage") == "train"}
    # the quickstart's cosine from lr 10 spans the 2 search epochs; the fine-tuning epoch has its own
    assert [lrs[1], lrs[2], lrs[3]] == pytest.approx([10.0, 5.0, 0.05])
    final = torch.load(run / "final.pt", weights_only=True)["model"]
    weight = final["features.0.parametrizations.weight.original"]
    assert weight.abs().unique().numel() > 2  # signed-constant weights moved: they trained
    flag = final["features.0.parametrizations.weight.0.flag"]
    scores = final["features.0.parametrizations.weight.0.scores"]
    assert torch.equal(scores[flag], torch.ones_like(scores[flag]))  # unflagged: the mask is the flag
    code, _, err = cli("export", run, "--format", "ticket", "--out", tmp_path / "t.st")
    assert code == 2 and "--format safetensors" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--sparsity", "1.5"], "pruner.params.sparsity"),
        (["--epochs", "3", "--set", "pruner.params.prune_every=3"], "no pruning round fits"),
        (["--epochs", "4", "--set", "pruner.params.finetune_epochs=4"], "leaves no search epoch"),
    ],
)
def test_schema_and_schedule_errors_are_one_line_exit_2_with_dry_run(cli, args, expected):
    code, _, err = cli("prune", "--method", "gem-miner", *args, "--dry-run")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_finetuning_under_torchrun_is_refused_in_one_line(cli, monkeypatch):
    for key, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29511",
        "WORLD_SIZE": "2",
        "RANK": "0",
    }.items():
        monkeypatch.setenv(key, value)
    args = ["prune", "--method", "gem-miner", "--epochs", "10", "--dry-run"]
    assert cli(*args)[0] == 0  # the search alone runs data-parallel
    code, _, err = cli(*args, "--set", "pruner.params.finetune_epochs=2")
    assert code == 2 and "run its fine-tuning in one process" in err and len(err.strip().splitlines()) == 1
