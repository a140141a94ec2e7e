"""BatchNorm models under ``torchrun --nproc-per-node 2`` (gloo, CPU): ResNet-18 at width 1/8.

DDP broadcasts rank 0's buffers *before* each forward, so after a step every rank holds running
statistics of its own half of the batch. The workflows copy rank 0's statistics to every rank
before they evaluate, checkpoint or check that the ranks agree; without that, the first
checkpoint of any BatchNorm model failed with "ranks diverged". Checked:

* a pruning run with checkpoints completes under 2 processes, and an interrupted one resumed
  under 2 processes ends bit-identical to the uninterrupted one (BatchNorm statistics included);
* a transfer run (scratch and FixMatch P-SSL) with a BatchNorm target completes under 2 processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

PRUNE = [
    "prune", "--recipe", "iterand-quickstart", "--device", "cpu", "--quiet", "--model", "resnet18",
    "--width", "0.125", "--epochs", "2", "--batch-size", "32",
    "--set", "data.train_limit=128", "--set", "data.val_fraction=0.05", "--set", "data.test_limit=64",
    "--set", "pruner.rerand_freq=2", "--set", "train.log_every=1", "--set", "train.checkpoint_every=2",
]  # fmt: skip


def info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def test_pruning_a_batchnorm_model_completes_and_resumes_exactly(tmp_path, scale):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    scale.torchrun(["-m", "ptl_cli", *PRUNE, "--out", str(whole)])
    assert info(whole)["status"] == "completed"

    stopped = scale.torchrun(
        ["-m", "ptl_cli", *PRUNE, "--out", str(resumed), "--set", "train.stop_after_steps=5"], check=False
    )
    assert stopped.returncode != 0 and info(resumed)["status"] == "interrupted", stopped.output[-3000:]
    scale.torchrun(["-m", "ptl_cli", "resume", str(resumed), "--quiet"])
    assert info(resumed)["status"] == "completed"
    assert records(resumed) == records(whole)
    a, b = (torch.load(r / "final.pt", weights_only=True)["model"] for r in (resumed, whole))
    assert any("running_mean" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_transfer_with_a_batchnorm_target_completes(tmp_path, scale):
    sets = {
        "stages": '["scratch", "pssl"]',
        "model.arch": '"resnet18"',
        "model.width": "0.125",
        "target.labels_per_class": "2",
        "pool.dir": json.dumps(str(tmp_path / "pools")),
        "pool.shard_size": "8",
        "pcs.per_image": "2",
        "ssl.mu": "2",
        "train.steps": "6",
        "train.batch_size": "4",
        "train.checkpoint_every": "2",
        "compute.device": '"cpu"',
    }
    out = tmp_path / "run"
    items = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    scale.torchrun(["-m", "ptl_cli", "transfer", "--quiet", "--out", str(out), *items])
    run = info(out)
    assert run["status"] == "completed", run.get("error")
    assert 0.0 <= run["metrics"]["pssl_test_acc"] <= 1.0
