"""``torchrun --nproc-per-node 2 -m ptl_cli transfer``: FixMatch P-SSL data-parallel on CPU (gloo).

Real bundled source models (Fashion-MNIST 0-4 BigGAN and classifier), real target images
(classes 5-9), Conv-2 at width 1/4 (no BatchNorm). Stages ``scratch`` and ``pssl`` (FixMatch
over a PCS pool that the two ranks generate between them). Checked:

* the run completes: at the end of each stage the workflow verified that both ranks hold
  bit-identical weights (it fails the run otherwise);
* the PCS pool is the same, shard for shard, as one process makes, and each shard was made
  by exactly one rank;
* ``scratch`` (weak augmentation only), ``pssl`` with FixMatch (weak and strong views, whose
  RandAugment and Cutout draws are rank-sharded) and with MeanTeacher (two weak views drawn
  inside its loss) log the same metrics as one process with the same global batch, within
  float tolerance;
* an interrupted 2-process run resumed under 2 processes ends exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptl_cli.testing import run_ptl

pytestmark = pytest.mark.slow

SETS = {
    "stages": '["scratch", "pssl"]',
    "model.arch": '"conv2"',
    "model.width": "0.25",
    "target.labels_per_class": "4",
    "pool.shard_size": "16",
    "pool.gen_batch_size": "16",
    "pcs.per_image": "3",
    "ssl.mu": "2",
    "train.steps": "16",
    "train.batch_size": "8",
    "train.log_every": "1",
    "train.checkpoint_every": "4",
    "train.ema_decay": "0.9",
    "compute.device": '"cpu"',
}


def args(out: Path, pool: Path, **extra: str) -> list[str]:
    items = [f"{k}={v}" for k, v in {**SETS, "pool.dir": json.dumps(str(pool)), **extra}.items()]
    return ["transfer", "--quiet", "--out", str(out), *[a for item in items for a in ("--set", item)]]


def records(run: Path) -> list[dict]:
    skip = {"time", "pool_seconds"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if k not in skip} for r in rows]


def info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def pool_shards(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {
        f"{p.parent.name[:3]}/{p.name}": torch.load(p, weights_only=True)
        for p in sorted(root.glob("*/shard-*.pt"))
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, scale) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("transfer-ddp")
    one, two = root / "one", root / "two"
    proc = run_ptl(*args(one, root / "pool-one"), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    scale.torchrun(["-m", "ptl_cli", *args(two, root / "pool-two")])
    return {"one": one, "two": two, "root": root}


def test_ranks_stay_identical_and_the_run_completes(runs):
    two = info(runs["two"])
    assert two["status"] == "completed", two.get("error")
    assert set(two["metrics"]) >= {"scratch_test_acc", "pssl_test_acc", "test_acc"}


def test_pool_is_split_across_ranks_without_duplicates(runs):
    one, two = pool_shards(runs["root"] / "pool-one"), pool_shards(runs["root"] / "pool-two")
    assert one.keys() == two.keys() and len(one) >= 2
    for name in one:
        assert one[name].keys() == two[name].keys()
        assert all(torch.equal(one[name][k], two[name][k]) for k in one[name]), name
    made = [r for r in records(runs["two"]) if r.get("stage") == "pcs-pool" and "shards_by_rank" in r]
    assert len(made) == 1
    by_rank = made[0]["shards_by_rank"]
    assert len(by_rank) == 2 and sum(by_rank) == len(one) and min(by_rank) >= 1


def _compare(a: list[dict], b: list[dict]) -> None:
    assert [(r["stage"], r["step"]) for r in a] == [(r["stage"], r["step"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key, value in ra.items():
            if isinstance(value, float):
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["stage"], ra["step"], key)
            elif key != "shards_by_rank":
                assert rb[key] == value, (ra["stage"], ra["step"], key)


def test_scratch_matches_one_process(runs):
    pick = [r for r in records(runs["one"]) if r["stage"] == "scratch"]
    _compare(pick, [r for r in records(runs["two"]) if r["stage"] == "scratch"])


def test_fixmatch_matches_one_process(runs):
    pick = [r for r in records(runs["one"]) if r["stage"] == "pssl"]
    _compare(pick, [r for r in records(runs["two"]) if r["stage"] == "pssl"])


def test_meanteacher_matches_one_process(tmp_path, scale):
    """MeanTeacher draws its two weak views inside its ``loss``: the loop calls the loss inside
    ``job.augmenting()``, so those draws too are rank shares (without it, both ranks drew the
    same numbers for different images and the runs differed from step 2 on)."""
    extra = {"stages": '["pssl"]', "ssl.name": '"meanteacher"', "train.steps": "6"}
    one = run_ptl(*args(tmp_path / "one", tmp_path / "pool", **extra), env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-3000:]
    scale.torchrun(["-m", "ptl_cli", *args(tmp_path / "two", tmp_path / "pool", **extra)])
    a, b = (
        [r for r in records(tmp_path / run) if r["stage"] == "pssl" and "loss" in r] for run in ("one", "two")
    )
    assert [r["step"] for r in a] == list(range(1, 7)) and any(r["loss_u"] > 0 for r in a)
    _compare(a, b)


def test_resume_under_two_processes_is_exact(runs, tmp_path, scale):
    """SIGTERM to torchrun once the first P-SSL checkpoint exists, then ``torchrun ... resume``."""
    out = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd += ["-m", "ptl_cli", *args(out, runs["root"] / "pool-two")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_pssl_checkpoint = out / "checkpoints" / "step-000000020.pt"  # scratch: 16 steps, then 4
    deadline = time.monotonic() + 300
    while not first_pssl_checkpoint.is_file() and proc.poll() is None:
        assert time.monotonic() < deadline, "no P-SSL checkpoint appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=180)
    assert info(out)["status"] == "interrupted", output[-3000:]
    assert "interrupted; continue with: ptl resume" in output

    scale.torchrun(["-m", "ptl_cli", "resume", str(out), "--quiet"])
    assert info(out)["status"] == "completed"
    training = [r for r in records(out) if r["stage"] != "pcs-pool"]  # its pool already existed
    assert training == [r for r in records(runs["two"]) if r["stage"] != "pcs-pool"]
    final, reference = (torch.load(r / "model.pt", weights_only=True) for r in (out, runs["two"]))
    assert all(torch.equal(final["state_dict"][k], reference["state_dict"][k]) for k in final["state_dict"])
