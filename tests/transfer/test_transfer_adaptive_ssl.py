"""FlexMatch and FreeMatch in real tiny P-SSL runs: the per-sample state spans the PCS pool, and a
run interrupted mid-P-SSL and resumed equals an uninterrupted one, state included."""

from __future__ import annotations

import pytest
import torch

from ptl_cli.engine.checkpoint import CheckpointStore
from ptl_cli.testing import ContractError, assert_same_state

#: FlexMatch's threshold lowered (8 target classes: chance is 0.125) so that the tiny, barely
#: trained model stores pseudo labels before the interruption at step 3.
PARAMS = {"flexmatch": {"ssl.params.threshold": 0.15}, "freematch": {}}
PER_IMAGE = 3  # pcs.per_image of the tiny recipe: the pool holds 3 pseudo samples per labeled image


def _recipe(tx, pools, name):
    return tx.tiny_recipe(
        pools, **{"stages": ["pssl"], "ssl.name": name, "train.log_every": 1, **PARAMS[name]}
    )


def _ssl_state(run_dir, step):
    saved, _ = CheckpointStore(run_dir / "checkpoints").load_newest()
    assert saved is not None and saved["phase"] == "pssl" and saved["state"]["step"] == step
    return saved["state"]["ssl"]


@pytest.fixture(scope="module", params=["flexmatch", "freematch"])
def reference_runs(request, tmp_path_factory, tx):
    """An uninterrupted run, and one stopped after step 5 only (its checkpoint holds the state
    an uninterrupted run has there)."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    data = _recipe(tx, root / "pools", name)
    whole = tx.run_transfer(data, root / "whole")  # makes the pool: the other runs only train
    assert tx.run_transfer(data, root / "at5", stop_after=5) is None
    return name, data, root, whole, _ssl_state(root / "at5", 5)


def test_an_interrupted_pssl_run_resumes_exactly(reference_runs, tmp_path, tx):
    name, data, root, whole, state_at_5 = reference_runs
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=3) is None
    ssl = _ssl_state(out, 3)
    if name == "flexmatch":  # one stored pseudo label per pool sample, some set already
        assert ssl["selected_label"].shape == (whole["labeled"] * PER_IMAGE,)
        assert (ssl["selected_label"] >= 0).any()
    else:
        k = ssl["p_model"].numel()
        assert not torch.allclose(ssl["p_model"], torch.full((k,), 1 / k))
    assert tx.run_transfer(data, out, stop_after=2, resuming=True) is None
    assert_same_state(_ssl_state(out, 5), state_at_5, name, "SSL state at step 5")
    resumed = tx.run_transfer(data, out, resuming=True)
    assert tx.without_seconds(resumed) == tx.without_seconds(whole)
    assert tx.records(out) == tx.records(root / "whole")
    a = torch.load(root / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_without_the_state_would_differ(reference_runs, tmp_path, tx):
    """The comparison above sees the state: the same checkpoint with the algorithm's state reset
    to a fresh one's ends step 5 with other state."""
    name, data, _, _, state_at_5 = reference_runs
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=3) is None
    store = CheckpointStore(out / "checkpoints")
    saved, path = store.load_newest()
    ssl = saved["state"]["ssl"]
    if name == "flexmatch":
        ssl["selected_label"].fill_(-1)
        ssl["classwise_acc"].zero_()
    else:
        for key in ("p_model", "label_hist"):
            ssl[key].fill_(1 / ssl[key].numel())
        ssl["time_p"].fill_(1 / ssl["p_model"].numel())
    torch.save(saved, path)
    assert tx.run_transfer(data, out, stop_after=2, resuming=True) is None
    with pytest.raises(ContractError):
        assert_same_state(_ssl_state(out, 5), state_at_5, name, "SSL state at step 5")


@pytest.fixture(scope="module")
def cli_pools(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-pools")


@pytest.mark.parametrize("name", ["flexmatch", "freematch"])
def test_ptl_transfer_runs_them_by_name(name, cli_pools, tmp_path):
    import json

    from ptl_cli.testing import run_ptl

    listed = run_ptl("list", "ssl", "--json")
    assert listed.returncode == 0 and name in listed.stdout
    sets = {
        "model.arch": "conv2", "model.width": 0.25, "target.labels_per_class": 4, "pool.shard_size": 32,
        "pool.dir": json.dumps(str(cli_pools)), "pcs.per_image": 3, "ssl.mu": 2, "train.steps": 4,
        "train.batch_size": 8, "train.log_every": 1,
    }  # fmt: skip
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    done = run_ptl(
        "transfer", "--ssl", name, "--stages", "pssl", "--device", "cpu", "--out", str(out), "--json", *args,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and 0.0 <= summary["metrics"]["pssl_test_acc"] <= 1.0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if r.get("stage") == "pssl" and "mask_ratio" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    if name == "freematch":  # the global threshold moves from 1/K with every batch
        assert len({r["threshold"] for r in logged}) == 4
