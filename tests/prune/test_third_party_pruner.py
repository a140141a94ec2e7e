"""A third-party score-only pruner with global top-k masks (tests/prune/third_party.py), installed
as a plugin: it keeps the contract through ``before_forward`` alone, runs from its own schema's
defaults, and gets a ticket exactly when it declares one (``ticket_spec``), verified or refused."""

from __future__ import annotations

import json

import pytest
import torch

from ptl_cli.testing import check_pruner, install_plugin
from ptl_prune.export import bit_equal
from ptl_prune.ticket import load_ticket, rebuild_state_dict

from .third_party import SOURCE

TINY = [
    "--model", "conv2", "--width", "0.25", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
    "--set", "data.train_limit=96", "--set", "data.test_limit=64", "--quiet",
]  # fmt: skip


@pytest.fixture
def gtopk(plugin_site):
    return install_plugin(str(plugin_site), "ptl-gtopk", "ptl_gtopk", SOURCE)  # a str site works too


def trained(cli, tmp_path, method: str, *more: str):
    run = tmp_path / method
    code, _, err = cli("prune", "--method", method, *TINY, *more, "--out", run)
    assert code == 0, err
    return run


def test_a_global_pruner_written_from_the_docs_keeps_the_contract(gtopk):
    pruner = check_pruner("gtopk", {"sparsity": 0.7})
    kept = sum(int(m.sum()) for m in pruner.masks)
    total = sum(m.numel() for m in pruner.masks)
    assert total - kept == round(0.7 * total)  # one threshold over all layers


def test_defaults_come_from_the_pruners_own_schema(gtopk, cli):
    code, out, err = cli("prune", "--method", "gtopk", "--dry-run", "--json")
    assert code == 0, err
    recipe = json.loads(out)["recipe"]
    assert recipe["pruner"] == {
        "name": "gtopk",
        "params": {"sparsity": 0.5, "weight_init": "signed_constant"},
    }
    assert recipe["train"]["lr"] == 0.7  # GlobalParams.default_lr, not ptl's generic 0.1
    code, out, _ = cli("prune", "--method", "gtopk", "--dry-run", "--json", "--lr", "0.05")
    assert json.loads(out)["recipe"]["train"]["lr"] == 0.05  # the recipe or a flag still wins
    code, out, _ = cli("prune", "--method", "sgd", "--recipe", "prune-quickstart", "--dry-run", "--json")
    assert json.loads(out)["recipe"]["train"]["lr"] == 0.01  # sgd's own default, not iterand's


@pytest.mark.parametrize("method", ["gtopk", "iterand"])
def test_a_misspelt_key_is_named_not_the_method(gtopk, cli, method):
    code, _, err = cli("prune", "--method", method, "--set", "pruner.params.sparsty=0.5", "--dry-run")
    assert code == 2 and err.count("\n") == 1
    assert "--set pruner.params.sparsty=0.5" in err and "unknown key `pruner.params.sparsty`" in err
    assert "did you mean 'sparsity'" in err and "pruner.name" not in err


def test_a_pruner_that_declares_nothing_is_refused_in_one_line(gtopk, cli, tmp_path):
    run = trained(cli, tmp_path, "gtopk")
    out = tmp_path / "t.safetensors"
    code, _, err = cli("export", run, "--format", "ticket", "--out", out)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "pruner 'gtopk' does not declare how to rebuild it" in err and "ticket_spec" in err
    assert not out.exists() and not list(tmp_path.glob(".t.safetensors*"))
    assert cli("export", run, "--format", "safetensors", "--out", tmp_path / "m.st", "--verify")[0] == 0


def test_a_declared_ticket_is_verified_and_smaller(gtopk, cli, tmp_path):
    run = trained(cli, tmp_path, "gtopk-ticket")
    out, dense = tmp_path / "t.safetensors", tmp_path / "m.safetensors"
    code, stdout, err = cli("export", run, "--format", "ticket", "--out", out)
    assert code == 0, err
    assert "verified" in stdout and "smaller" in stdout  # verified even without --verify
    assert cli("export", run, "--format", "safetensors", "--out", dense)[0] == 0
    assert out.stat().st_size * 4 < dense.stat().st_size
    from safetensors.torch import load_file

    rebuilt, meta = rebuild_state_dict(out)
    expected = load_file(str(dense))
    assert meta["method"] == "gtopk-ticket" and rebuilt.keys() == expected.keys()
    assert all(bit_equal(rebuilt[k], expected[k]) for k in expected)
    weights = [v for k, v in expected.items() if k.endswith("weight") and v.ndim > 1]
    pruned = sum(int((w == 0).sum()) for w in weights)
    assert pruned == round(0.5 * sum(w.numel() for w in weights))  # the global count
    assert isinstance(load_ticket(out), torch.nn.Module)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("gtopk-fat", "no smaller than the dense export"),
        ("gtopk-liar", "does not rebuild the trained network"),
    ],
)
def test_a_ticket_that_is_too_big_or_wrong_is_refused_and_leaves_no_file(
    gtopk, cli, tmp_path, method, expected
):
    run = trained(cli, tmp_path, method, "--width", "0.1")  # ~30k weights: 120 kB dense
    out = tmp_path / "t.safetensors"
    code, _, err = cli("export", run, "--format", "ticket", "--out", out)
    assert code == 2 and err.count("\n") == 1, err
    assert expected in err and f"'{method}'" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".t.")]
