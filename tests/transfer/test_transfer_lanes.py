"""Stages side by side in child processes (``stage_processes``): the same run, sooner.

The lanes of a run are ordinary child runs of some of its stages; the run gathers them. What a
user must be able to rely on is checked on real tiny runs through the CLI: the gathered run
equals one process with one thread record for record (weights too), it survives SIGTERM and a
SIGKILL of the parent (the lanes checkpoint) and resumes to the same end, and the plan says how
the stages are dealt.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptl_cli import plugins, recipes
from ptl_cli.errors import UserError
from ptl_cli.runs import Run
from ptl_cli.testing import run_ptl
from ptl_transfer import lanes
from ptl_transfer.workflow import TransferWorkflow

pytestmark = pytest.mark.slow

TINY = {
    "model.width": 0.25, "target.labels_per_class": 4, "pool.shard_size": 32, "pool.gen_batch_size": 16,
    "pp.samples": 64, "pp.train.steps": 6, "pp.train.batch_size": 16, "pp.train.log_every": 2,
    "pcs.per_image": 3, "ssl.mu": 2, "train.steps": 60, "train.batch_size": 8, "train.log_every": 2,
    "train.checkpoint_every": 2,
}  # fmt: skip
TIME_KEYS = {"time", "pool_seconds"}
ALL = ["scratch", "kd", "pp", "pssl", "pp+pssl"]


def args(pools: Path, **sets) -> list[str]:
    flat = {**TINY, "pool.dir": f'"{pools}"', **sets}
    return ["transfer", *(x for k, v in flat.items() for x in ("--set", f"{k}={v}")), "--device", "cpu"]


def records(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def outcome(run_dir: Path) -> tuple[list[dict], dict, dict]:
    """What must not depend on how the run was executed: records, metrics (not timings), weights."""
    metrics = json.loads((run_dir / "run.json").read_text())["metrics"]
    weights = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    return records(run_dir), {k: v for k, v in metrics.items() if not k.endswith("seconds")}, weights


def same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    assert a[1] == b[1]
    assert a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: every stage in order in one process with one thread."""
    out = tmp_path_factory.mktemp("one")
    done = run_ptl(
        *args(out / "pools", stage_processes=1), "--out", out / "run", env={"OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr
    return outcome(out / "run")


def recipe(**sets):
    data, _ = recipes.load_raw("transfer-quickstart")
    for key, value in sets.items():
        recipes.set_dotted(data, key, value, "test")
    return recipes.validate(data, plugins.get("workflows", "transfer").params, "test").model


def test_stages_are_dealt_longest_first_and_pp_stages_stay_together():
    quick = recipe()
    assert lanes.assign(quick, 2) == [["pp", "pp+pssl"], ["scratch", "kd", "pssl"]]
    assert lanes.assign(quick, 1) == [["scratch", "kd", "pp", "pssl", "pp+pssl"]]
    for count in (3, 4, 8):  # however many lanes, the two PP stages share their pre-training
        dealt = lanes.assign(quick, count)
        assert sorted(s for lane in dealt for s in lane) == sorted(quick.stages)
        assert any({"pp", "pp+pssl"} <= set(lane) for lane in dealt) and len(dealt) == min(count, 4)
    assert lanes.assign(recipe(stages=["pssl"]), 2) == [["pssl"]]  # nothing to run side by side
    assert lanes.assign(recipe(stages=["pp", "pp+pssl"]), 2) == [["pp", "pp+pssl"]]


def test_auto_uses_two_lanes_only_on_a_cpu_with_threads_to_spare():
    auto = recipe()
    assert lanes.lane_count(auto, "cpu", False, threads=2) == 2
    assert lanes.lane_count(auto, "cpu", False, threads=1) == 1  # OMP_NUM_THREADS=1, a sweep cell's core
    assert lanes.lane_count(auto, "cuda", False, threads=16) == 1
    assert lanes.lane_count(auto, "cpu", True, threads=2) == 1  # torchrun: the ranks share every stage
    assert lanes.lane_count(recipe(stage_processes=3), "cpu", False, threads=1) == 3
    for bad in (0, "two", 1.5):
        with pytest.raises(UserError, match="stage_processes is 'auto' or a number of processes"):
            recipe(stage_processes=bad)


def test_the_progress_of_a_lane_follows_a_resume_that_rewrites_its_log(tmp_path):
    """A killed child leaves a torn last line; on resume it rewrites its metrics shorter (without
    the records after its checkpoint) and appends again. The parent's reader must follow the new
    file from its start, not read it from the old offset (mid-line: the bug CI met), and the
    parent's own file, which relays the lanes' records while they run, must follow it too."""
    parent = Run(tmp_path / "run")
    parent.path.mkdir()
    lane = lanes.Lane(parent.path / "lanes", 0, ["pp", "pp+pssl"])
    other = lanes.Lane(parent.path / "lanes", 1, ["scratch"])
    child, sibling = Run(lane.path), Run(other.path)
    lane.path.mkdir(parents=True)
    other.path.mkdir(parents=True)
    sibling.log({"stage": "scratch", "step": 2, "loss": 2.0})
    for step in (2, 4, 6, 8):
        child.log({"stage": "pp-pretrain", "step": step, "loss": 1.0 / step})
    with child.metrics_path.open("a") as fh:
        fh.write('{"stage": "pp-pretrain", "st')  # SIGKILL mid-write

    def poll() -> None:
        arrived, rewritten = [], False
        for each in (lane, other):
            new, again = each.progress()
            arrived, rewritten = arrived + new, rewritten or again
        lanes._relay(parent, [lane, other], arrived, rewritten)

    poll()
    assert lane.steps == {"pp-pretrain": 8} and len(parent.metrics()) == 5
    child.truncate_metrics(lambda record: record["step"] <= 4)  # the checkpoint was at step 4
    child.log({"stage": "pp-pretrain", "step": 6, "loss": 0.2})
    poll()
    assert lane.steps == {"pp-pretrain": 6}
    assert [(r["stage"], r["step"]) for r in parent.metrics()] == [
        ("pp-pretrain", 2), ("pp-pretrain", 4), ("pp-pretrain", 6), ("scratch", 2),
    ]  # fmt: skip
    child.log({"stage": "pp", "step": 2, "loss": 0.5})
    poll()
    assert lane.steps == {"pp-pretrain": 6, "pp": 2} and parent.metrics()[-1]["stage"] == "pp"


def test_the_plan_says_how_the_stages_are_dealt():
    shown = run_ptl("transfer", "--dry-run", "--json")
    assert shown.returncode == 0, shown.stderr
    row = json.loads(shown.stdout)["plan"]["processes"]
    assert row.startswith("auto:") and "pp, pp+pssl | scratch, kd, pssl" in row
    shown = run_ptl("transfer", "--dry-run", "--json", "--set", "stage_processes=1")
    assert json.loads(shown.stdout)["plan"]["processes"] == "one process"


def test_lanes_compute_what_one_process_computes(one_process, tmp_path):
    out = tmp_path / "run"
    command = [*args(tmp_path / "pools", stage_processes=2), "--out", out, "--log-every-s", "0"]
    done = run_ptl(*command, env={"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    same(outcome(out), one_process)
    # off a terminal the parent writes lines of the lanes' stages, steps and losses
    lines = [x for x in done.stdout.splitlines() if x.startswith("[lanes]")]
    assert lines[0].startswith("[lanes] start step 0/") and lines[-1].startswith("[lanes] done step")
    assert any(re.search(r"/60 loss \d\.\d{4}", x) for x in lines[1:-1]), lines
    plan = json.loads((out / "lanes" / "plan.json").read_text())
    assert plan["threads"] == 1 and len(plan["lanes"]) == 2  # two threads: two lanes of one
    assert sorted(s for lane in plan["lanes"] for s in lane) == sorted(ALL)
    assert any({"pp", "pp+pssl"} <= set(lane) for lane in plan["lanes"])
    assert sorted(p.name for p in (out / "stages").iterdir()) == [
        "kd.pt", "pp-pretrain.pt", "pp.pt", "pp_pssl.pt", "pssl.pt", "scratch.pt",
    ]  # fmt: skip
    shown = run_ptl("runs", "show", out)
    assert shown.returncode == 0 and "pp+pssl" in shown.stdout and "pcs-pool" in shown.stdout
    # provenance names the threads that computed (each lane's), not only the waiting parent's
    assert "2 processes of 1 thread each" in shown.stdout
    made = Run(out).info()["provenance"]
    assert made["processes"] == {"count": 2, "threads": 1} and made["threads"] == 2
    total = TransferWorkflow().results_table(Run(out))[1][-1]
    assert total[0] == "total" and "2 processes side by side" in total[1]


def _start(tmp_path: Path, out: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "ptl_cli",
        *args(tmp_path / "pools", stage_processes=2),
        "--out",
        str(out),
    ]
    env = {**os.environ, "COLUMNS": "400"}  # one message, one line
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _wait_for_lane_records(out: Path, timeout: float = 120) -> None:
    """Until both lanes have logged a training step (so both hold a checkpoint soon)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logged = [out / "lanes" / str(i) / "metrics.jsonl" for i in (0, 1)]
        if all(p.is_file() and '"lr"' in p.read_text() for p in logged):
            return
        time.sleep(0.2)
    raise AssertionError("the lanes never started training")


def info_stages(out: Path, index: int) -> list[str]:
    return json.loads((out / "lanes" / "plan.json").read_text())["lanes"][index]


def _statuses(out: Path) -> list[str]:
    return [json.loads((out / "lanes" / str(i) / "run.json").read_text())["status"] for i in (0, 1)]


def test_sigterm_stops_every_lane_and_resume_ends_as_one_process(one_process, tmp_path):
    out = tmp_path / "run"
    parent = _start(tmp_path, out)
    _wait_for_lane_records(out)
    deadline = time.monotonic() + 30  # the run's own file relays the lanes' records as they come

    def relayed() -> bool:
        logged = {r["stage"] for r in Run(out).metrics()}
        return bool(logged & {"pp-pretrain", "pp"}) and bool(logged & {"scratch", "kd", "pssl"})

    while time.monotonic() < deadline and not relayed():
        time.sleep(0.2)
    assert relayed()
    shown = run_ptl("runs", "show", out, "--json")
    summary = json.loads(shown.stdout)
    assert shown.returncode == 0 and summary["status"] == "running" and " step " in summary["at"]
    parent.send_signal(signal.SIGTERM)
    err, _ = parent.communicate(timeout=120)
    assert parent.returncode == 130, err
    assert f"ptl resume {out}" in err
    assert _statuses(out) == ["interrupted", "interrupted"]
    resumed = run_ptl("resume", out, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    same(outcome(out), one_process)


def test_a_killed_run_leaves_its_lanes_checkpointed(one_process, tmp_path):
    """SIGKILL of the parent alone: each lane gets SIGTERM (Linux), checkpoints and stops."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the lanes learn of their parent's death through Linux's PR_SET_PDEATHSIG")
    out = tmp_path / "run"
    parent = _start(tmp_path, out)
    _wait_for_lane_records(out)
    parent.kill()
    parent.wait(timeout=30)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "running" in _statuses(out):
        time.sleep(0.2)
    assert set(_statuses(out)) <= {"interrupted", "completed"}
    resumed = run_ptl("resume", out, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    same(outcome(out), one_process)


def test_a_lane_that_dies_stops_the_others_and_the_run_says_which(one_process, tmp_path):
    """A lane killed from outside (the OOM killer, say) fails the run with one line naming the
    lane and its log; the other lane checkpoints and stops; resume finishes both."""
    out = tmp_path / "run"
    parent = _start(tmp_path, out)
    _wait_for_lane_records(out)
    info = json.loads((out / "lanes" / "0" / "run.json").read_text())
    os.kill(int(info["pid"]), signal.SIGKILL)
    err, _ = parent.communicate(timeout=120)
    assert parent.returncode == 1
    line = err.strip().splitlines()[-1]
    named = f"lane 0 ({', '.join(info_stages(out, 0))}) failed: killed by SIGKILL"
    assert named in line and "0.log" in line and f"ptl resume {out}" in line
    assert _statuses(out)[1] in ("interrupted", "completed")  # stopped cleanly, not left running
    resumed = run_ptl("resume", out, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    same(outcome(out), one_process)
