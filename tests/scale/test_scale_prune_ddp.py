"""``torchrun --nproc-per-node 2 -m ptl_cli prune``: IteRand with re-draws, data-parallel on CPU (gloo).

The model is Conv-6 (the paper's, at width 1/4): it has no BatchNorm, so two ranks with half
the global batch each compute exactly the single-process gradient up to float rounding, and
with rank-sharded augmentation they see the same augmented images. So:

* the 2-process run's metrics (per-step train loss/accuracy, validation and test accuracy)
  equal a 1-process run with the same global batch, within float tolerance;
* the ranks hold bit-identical weights, scores and re-draw records throughout (the workflow
  checks it at each checkpoint and at the end, and fails loudly otherwise);
* a 2-process run interrupted mid-epoch and resumed under 2 processes ends bit-identical to
  an uninterrupted 2-process run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ptl_cli.testing import run_ptl

# 256 real training images, global batch 64: 4 steps per epoch, 2 epochs; re-draws every 2 steps.
TINY = [
    "prune", "--recipe", "iterand-quickstart", "--device", "cpu", "--quiet", "--model", "conv6",
    "--width", "0.25", "--epochs", "2", "--batch-size", "64",
    "--set", "data.train_limit=256", "--set", "data.val_fraction=0.02", "--set", "data.test_limit=200",
    "--set", "pruner.rerand_freq=2", "--set", "pruner.rerand_lambda=0.5",
    "--set", "train.log_every=1", "--set", "train.checkpoint_every=3",
]  # fmt: skip

pytestmark = pytest.mark.slow


def records(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def final(run: Path) -> dict:
    return torch.load(run / "final.pt", weights_only=True)


def info(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, scale) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "two"
    scale.torchrun(["-m", "ptl_cli", *TINY, "--out", str(out)])
    return out


def test_two_processes_match_one_process(two_process_run, tmp_path):
    one = tmp_path / "one"
    proc = run_ptl(*TINY, "--out", str(one), env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = two_process_run
    assert info(two)["status"] == "completed"

    a, b = records(one), records(two)
    assert [(r["stage"], r["step"]) for r in a] == [(r["stage"], r["step"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key, value in ra.items():
            if isinstance(value, float):
                assert rb[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (ra["stage"], ra["step"], key)
            else:
                assert rb[key] == value, (ra["stage"], ra["step"], key)

    fa, fb = final(one), final(two)
    assert fa["pruner"]["events"] == fb["pruner"]["events"] == [2, 4, 6, 8]
    for name, tensor in fa["model"].items():
        other = fb["model"][name]
        if tensor.is_floating_point():
            assert torch.allclose(tensor, other, rtol=1e-4, atol=1e-5), name
        else:
            assert torch.equal(tensor, other), name  # IteRand's re-draw bookkeeping
    ma, mb = info(one)["metrics"], info(two)["metrics"]
    assert mb["sparsity"] == ma["sparsity"]
    assert mb["test_acc"] == pytest.approx(ma["test_acc"], abs=1 / 200 + 1e-9)  # at most one image flips


def test_resume_under_two_processes_is_exact(two_process_run, tmp_path, scale):
    out = tmp_path / "resumed"
    stopped = scale.torchrun(
        ["-m", "ptl_cli", *TINY, "--out", str(out), "--set", "train.stop_after_steps=5"], check=False
    )
    assert stopped.returncode != 0
    assert info(out)["status"] == "interrupted"
    assert (out / "checkpoints" / "step-000000005.pt").is_file()
    scale.torchrun(["-m", "ptl_cli", "resume", str(out), "--quiet"])
    assert info(out)["status"] == "completed"
    assert records(out) == records(two_process_run)
    fa, fb = final(out), final(two_process_run)
    assert fa["pruner"]["events"] == fb["pruner"]["events"]
    assert all(torch.equal(fa["model"][k], fb["model"][k]) for k in fa["model"])
