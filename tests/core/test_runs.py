"""Run directories and checkpoints: atomicity, fallback from corrupt files, lookups."""

from __future__ import annotations

import pytest
import torch

from ptl_cli.engine.checkpoint import CheckpointStore
from ptl_cli.engine.seeding import capture_rng, restore_rng
from ptl_cli.errors import UserError
from ptl_cli.runs import Run
from ptl_cli.testing import run_ptl


def test_create_open_and_status(tmp_path):
    run = Run.create("demo", "x", {"kind": "demo", "seed": 1}, out=str(tmp_path / "r"))
    assert Run.open(tmp_path / "r").info()["status"] == "running"
    run.set_status("completed", metrics={"test_acc": 0.5})
    assert run.info()["metrics"]["test_acc"] == 0.5
    assert run.recipe_data() == {"kind": "demo", "seed": 1}
    with pytest.raises(UserError, match="already holds a run"):
        Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "r"))


def test_open_rejects_non_runs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a ptl run"):
        Run.open(tmp_path / "empty")
    with pytest.raises(UserError, match="not found"):
        Run.open(tmp_path / "missing")


def test_resume_of_a_non_run_is_exit_2(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "keep.txt").write_text("mine")
    out = run_ptl("resume", str(tmp_path / "plain"))
    assert out.returncode == 2 and "not a ptl run" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "plain" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["keep.txt"]


def test_checkpoint_falls_back_from_truncated_file(tmp_path):
    messages = []
    store = CheckpointStore(tmp_path, keep=2, warn=messages.append)
    store.save({"step": 1, "w": torch.arange(5.0)}, 1)
    store.save({"step": 2, "w": torch.arange(5.0) * 2}, 2)
    newest = store.paths()[-1]
    newest.write_bytes(newest.read_bytes()[:40])  # a power cut in the middle of a write
    state = store.load()
    assert state["step"] == 1 and torch.equal(state["w"], torch.arange(5.0))
    assert (
        "step-000000002.pt is unreadable" in messages[0]
        and "falling back to step-000000001.pt" in messages[0]
    )


def test_checkpoint_keeps_newest(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(5):
        store.save({"step": step}, step)
    assert [p.name for p in store.paths()] == ["step-000000003.pt", "step-000000004.pt"]
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_state_round_trips_through_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    np.random.standard_normal()  # leaves a cached Gaussian in NumPy's state
    store = CheckpointStore(tmp_path)
    store.save({"rng": capture_rng()}, 0)
    expected = (torch.rand(3), random.random(), np.random.standard_normal(4))
    restore_rng(store.load()["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    assert np.array_equal(np.random.standard_normal(4), expected[2])


def test_an_unreadable_checkpoint_is_set_aside_and_not_counted(tmp_path):
    messages = []
    store = CheckpointStore(tmp_path, keep=2, warn=messages.append)
    store.save({"step": 1}, 1)
    store.save({"step": 2}, 2)
    (tmp_path / "step-000000002.pt").write_bytes(b"PK\x03\x04 not a checkpoint")
    assert store.load()["step"] == 1
    assert "moved to step-000000002.pt.corrupt" in messages[0]
    store.save({"step": 3}, 3)  # keep=2 now means steps 1 and 3: the good one survives
    assert [p.name for p in store.paths()] == ["step-000000001.pt", "step-000000003.pt"]
    assert (tmp_path / "step-000000002.pt.corrupt").is_file()
    for path in store.paths():
        path.write_bytes(b"")
    messages.clear()
    assert store.load() is None and "no older checkpoint; starting over" in messages[-1]


def test_out_must_be_new_or_empty(tmp_path):
    (tmp_path / "empty").mkdir()
    Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "empty"))  # an empty folder is fine
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not an empty directory"):
        Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "mine"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "file"))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_running_runs_record_their_owner(tmp_path):
    import os
    import subprocess
    import sys

    run = Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "r"))
    assert run.info()["pid"] == os.getpid() and run.live_owner() == os.getpid()
    run.set_status("running")  # this process owns it: fine
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    run.update(pid=int(gone.stdout))
    assert run.live_owner() is None  # its process has ended: nobody owns it
    run.set_status("running")
    assert run.info()["pid"] == os.getpid()
    run.set_status("interrupted")
    assert run.live_owner() is None


def test_metrics_truncation_for_resume(tmp_path):
    run = Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "r"))
    for step in range(5):
        run.log({"step": step, "loss": float(step)})
    with run.metrics_path.open("a") as fh:
        fh.write('{"step": 5, "lo')  # a line cut short by a crash
    run.truncate_metrics(lambda r: r["step"] <= 2)
    assert [r["step"] for r in run.metrics()] == [0, 1, 2]


def test_runs_list_and_show_json(tmp_path):
    import json

    run = Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "runs" / "r1"))
    run.set_status("interrupted")
    out = run_ptl("runs", "list", "--json", "--root", str(tmp_path / "runs"))
    (row,) = json.loads(out.stdout)
    assert row["status"] == "interrupted" and row["kind"] == "demo"
    out = run_ptl("runs", "show", str(run.path), "--json")
    shown = json.loads(out.stdout)
    assert shown["status"] == "interrupted" and shown["recipe"] == {"kind": "demo"}
    assert shown["at"] == "starting"  # nothing logged yet


def test_runs_show_says_where_a_stopped_run_got_to(tmp_path):
    """The newest complete record, read from the file's tail (a torn last line is passed over)."""
    run = Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "r"))
    for step in range(1, 2001):  # longer than the tail that is read
        run.log({"stage": "pssl", "epoch": step // 500, "step": step, "loss": 1.0 / step})
    with run.metrics_path.open("a") as fh:
        fh.write('{"stage": "pssl", "ep')
    run.set_status("interrupted")
    assert run.position() == "pssl epoch 4 step 2000"
    shown = run_ptl("runs", "show", str(run.path))
    assert shown.returncode == 0 and "at: pssl epoch 4 step 2000" in shown.stdout


def test_a_run_whose_process_died_shows_as_interrupted(tmp_path):
    """A run left `running` by a killed process (no signal handler ran) reads as interrupted."""
    import json
    import subprocess
    import sys

    run = Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "r"))
    assert not run.abandoned()  # this process owns it and is alive
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    run.write_info({**run.info(), "pid": int(gone.stdout)})  # the owner exited without a word
    assert run.abandoned()
    assert json.loads(run_ptl("runs", "show", str(run.path), "--json").stdout)["status"] == "interrupted"
    assert run.info()["status"] == "running"  # reading never rewrites the run
