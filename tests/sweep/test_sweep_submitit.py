"""The Slurm path of ``ptl sweep`` through submitit's local executor (no cluster): one job array,
a preempted task checkpoints its run and is requeued, and the requeued task resumes it exactly."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import submitit
import torch

from ptl_cli import sweep as sweeps
from ptl_cli import sweep_slurm
from ptl_cli.sweep_progress import SweepProgress
from ptl_prune.export import bit_equal

BASE = """
extends = "prune-quickstart"
[model]
name = "conv2"
width = 0.125
[data]
train_limit = 96
test_limit = 64
val_fraction = 0.1
[train]
epochs = 4
batch_size = 32
checkpoint_every = 1
log_every = 1
"""


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def preempt(run_pid: int) -> None:
    """Send Slurm's preemption signal (submitit's default, SIGUSR2) to the array task that runs
    the cell, as Slurm does: the parent of the cell's ``ptl run`` process."""
    stat = Path(f"/proc/{run_pid}/stat").read_text()
    task_pid = int(stat.rsplit(")", 1)[1].split()[1])
    os.kill(task_pid, signal.SIGUSR2)


def test_preempted_array_task_is_requeued_and_resumes_exactly(cli, one_thread, tmp_path):
    base = tmp_path / "tiny.toml"
    base.write_text(BASE)
    request = sweeps.Request(
        recipe=str(base),
        grid=["pruner.params.sparsity=0.5"],
        seeds="0,1",
        launcher="submitit-local",
        out=str(tmp_path / "sw"),
        slurm={"time": 30},
    )
    sweep, table, data = sweeps.plan(request)
    sweeps.prepare(sweep, data)
    submitted = sweep_slurm.submit(sweep, table)
    assert len(submitted) == 2 and all(isinstance(job, submitit.Job) for _, job in submitted)
    cell, job = submitted[0]
    run = sweep.run_dir(cell)
    deadline = time.time() + 120
    while time.time() < deadline and not job.done():
        early = [p for p in run.glob("checkpoints/step-*.pt") if int(p.stem.split("-")[1]) <= 4]
        if early and not (run / "final.pt").exists():
            preempt(json.loads((run / "run.json").read_text())["pid"])
            break
        time.sleep(0.05)
    else:
        pytest.fail("the cell finished (or never started) before it could be preempted")
    sweep_slurm.wait(sweep, submitted, SweepProgress(sweep, enabled=False))
    record = json.loads((sweep.path / "sweep.json").read_text())
    assert {c["status"] for c in record["cells"]} == {"completed"}
    log = sweep.log_file(cell).read_text()
    assert " run --recipe " in log and " resume " in log  # started, preempted, requeued, resumed
    reference = tmp_path / "reference"
    code, _, err = cli("run", "--recipe", sweep.recipe_file(cell), "--out", reference, "--quiet")
    assert code == 0, err
    assert records(sweep.run_dir(cell)) == records(reference)
    a = torch.load(reference / "final.pt", weights_only=True)["model"]
    b = torch.load(sweep.run_dir(cell) / "final.pt", weights_only=True)["model"]
    assert all(bit_equal(a[k], b[k]) for k in a)
    code, out, err = cli("sweep", "show", sweep.path, "--json")
    assert code == 0, err
    assert json.loads(out)["rows"][0]["metrics"]["test_acc"]["n"] == 2


def test_slurm_launcher_without_slurm_is_a_one_line_error(cli, tmp_path):
    base = tmp_path / "tiny.toml"
    base.write_text(BASE)
    if submitit.AutoExecutor.which() == "slurm":
        pytest.skip("this machine has Slurm")
    code, _, err = cli(
        "sweep", "--recipe", base, "--seeds", "0", "--launcher", "slurm", "--out", tmp_path / "s"
    )
    assert code == 2 and not (tmp_path / "s").exists()
    assert code == 2 and "no Slurm here" in err and len(err.strip().splitlines()) == 1, err
