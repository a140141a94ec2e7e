"""The SSL features-and-heads contract end to end, proven by a third-party plugin.

``ptl-projhead`` (next to this file) was written from docs/plugins only: an algorithm whose
``heads(feature_dim)`` asks for a projection MLP and whose loss calls
``model(x, with_heads=True)``. It is pip-installed into a directory of its own, as the plugin
tests install the example plugin, and run through real tiny ``ptl transfer`` runs: the head is
trained, checkpointed and resumed exactly, and neither the stage's weights nor ``ptl export``
hold it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from ptl_cli import plugins
from ptl_cli.engine.checkpoint import CheckpointStore
from ptl_cli.testing import check_ssl, pip_install, run_ptl

PACKAGE = Path(__file__).resolve().parent / "ptl-projhead"
ALGO = "proj-consistency"


@pytest.fixture(scope="module")
def projhead_site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ptl-projhead")
    source = shutil.copytree(PACKAGE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    return pip_install(source, target=root / "site")


@pytest.fixture
def with_projhead(projhead_site, monkeypatch):
    """The plugin installed for this test, in-process and for ``run_ptl`` subprocesses."""
    monkeypatch.syspath_prepend(str(projhead_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(projhead_site), os.environ.get("PYTHONPATH", "")]))
    importlib.invalidate_caches()
    plugins.reset()
    yield projhead_site
    plugins.reset()


def _recipe(tx, pools: Path) -> dict:
    return tx.tiny_recipe(pools, stages=["pssl"], **{"ssl.name": ALGO})


def _saved(run: Path) -> list[dict]:
    """The run's checkpoints taken while a phase was training, oldest first."""
    store = CheckpointStore(run / "checkpoints")
    saved = [store.load_file(p) for p in store.paths()]
    return [s for s in saved if s.get("state") is not None]


def _checkpointed_models(run: Path) -> list[dict[str, torch.Tensor]]:
    return [s["state"]["model"] for s in _saved(run)]


def test_the_plugin_passes_check_ssl_and_its_head_gets_gradients(with_projhead):
    """check_ssl wraps the net as ptl transfer does: the resume check covers the head, and the
    gradient check names a head the loss leaves out."""
    check_ssl(ALGO, gpu=False)
    from ptl_projhead.algorithm import ProjConsistency

    class Unused(ProjConsistency):
        def heads(self, feature_dim):
            return {**super().heads(feature_dim), "spare": torch.nn.Linear(feature_dim, 2)}

    from ptl_cli.testing import ContractError

    with pytest.raises(ContractError, match="no gradient reaches its head 'spare'"):
        check_ssl(Unused, gpu=False, steps=2, resume_at=1)


#: The tiny recipe's keys (tests/transfer/conftest.py), as ``--set`` flags for ``ptl transfer``.
TINY = {
    "model.arch": '"conv2"', "model.width": "0.25", "target.labels_per_class": "4",
    "pool.shard_size": "32", "pool.gen_batch_size": "16", "pcs.per_image": "3", "ssl.mu": "2",
    "train.steps": "6", "train.batch_size": "8", "train.log_every": "2", "train.checkpoint_every": "2",
    "compute.device": '"cpu"', "stage_processes": "1",
}  # fmt: skip


@pytest.fixture(scope="module")
def whole(projhead_site, tmp_path_factory, tx):
    """``ptl transfer --ssl proj-consistency --stages pssl``: the plugin's algorithm from the CLI,
    the uninterrupted run (6 steps) a resumed one must equal."""
    out = tmp_path_factory.mktemp("whole")
    sets = {**TINY, "pool.dir": json.dumps(str(out / "pools"))}
    args = ["transfer", "--recipe", "transfer-quickstart", "--ssl", ALGO, "--stages", "pssl"]
    args += [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    path = os.pathsep.join([str(projhead_site), os.environ.get("PYTHONPATH", "")])
    # one intra-op thread, as the test's in-process and resumed parts use (`one_thread`): records
    # are compared bit for bit across processes
    env = {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    done = run_ptl(*args, "--out", str(out / "run"), "--json", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and 0.0 <= summary["metrics"]["test_acc"] <= 1.0
    return _recipe(tx, out / "pools"), out / "run", summary["metrics"]


def test_a_run_with_a_head_resumes_exactly_from_the_cli_and_exports_the_net_alone(
    with_projhead, whole, tmp_path, tx, one_thread
):
    """Interrupted mid P-SSL (the checkpoint holds the head), ``ptl resume`` gives the
    uninterrupted run's records and result; the stage's weights and ``ptl export`` are the
    network alone."""
    data, whole_dir, metrics = whole
    cut = tmp_path / "cut"
    assert tx.run_transfer(data, cut, stop_after=3) is None
    model = _checkpointed_models(cut)[-1]
    assert {k for k in model if k.startswith("heads.proj.")}  # the head is checkpointed
    assert all(k.startswith(("net.", "heads.")) for k in model)
    resumed = run_ptl("resume", str(cut), "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tx.records(cut) == tx.records(whole_dir)
    assert json.loads(resumed.stdout)["metrics"]["test_acc"] == metrics["test_acc"]
    losses = [r["loss_u"] for r in tx.records(whole_dir) if "loss_u" in r]
    assert len(losses) == 3 and all(v > 0 for v in losses)  # the head's loss was logged each time

    plain = tx.make_job(data, whole_dir).new_model("target").state_dict()
    stage = torch.load(cut / "stages" / "pssl.pt", weights_only=True)
    assert stage.keys() == plain.keys()  # no head, no "net." prefix
    exported = run_ptl("export", str(cut), "--format", "pt", "-o", str(tmp_path / "e.pt"), "--verify")
    assert exported.returncode == 0 and "verified" in exported.stdout, exported.stderr
    assert torch.load(tmp_path / "e.pt", weights_only=True)["state_dict"].keys() == plain.keys()


def test_simmatch_trains_through_the_loop_with_labeled_indices_and_resumes_exactly(whole, tmp_path, tx):
    """The built-in SimMatch in a real P-SSL run: the loop passes ``labeled_index`` (32 labeled
    images, 8 a step: the bank is full after 4 steps and the similarity loss starts), its bank
    is resumed exactly, and its projection head stays out of the stage's weights."""
    data, whole_dir, _ = whole
    data = {**data, "ssl": {**data["ssl"], "name": "simmatch"}}
    straight = tx.run_transfer(data, tmp_path / "straight")
    assert tx.run_transfer(data, tmp_path / "cut", stop_after=3) is None
    bank = [s["state"]["ssl"] for s in _saved(tmp_path / "cut")][-1]
    assert bank["bank"].shape == (128, 32) and 0 < int(bank["filled"].sum()) < 32
    assert tx.without_seconds(tx.run_transfer(data, tmp_path / "cut", resuming=True)) == tx.without_seconds(
        straight
    )
    logged = tx.records(tmp_path / "straight")
    assert tx.records(tmp_path / "cut") == logged
    in_losses = [r["loss_in"] for r in logged if "loss_in" in r]
    assert in_losses[0] == 0.0 and in_losses[-1] > 0.0  # steps 2 (bank filling) and 6 (full)
    plain = tx.make_job(data, whole_dir).new_model("target").state_dict()
    assert torch.load(tmp_path / "straight" / "stages" / "pssl.pt", weights_only=True).keys() == plain.keys()
