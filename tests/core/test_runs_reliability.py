"""What ptl promises about runs (docs/runs.md), tried the way a careful user with bad luck would.

One writer per run (a flock held for the process's life), nothing written over a file ptl did not
create, every file ptl reads may be broken (named in one line), resume exact across a failed
write at any point. Runs are the ``demo`` workflow's (tests/core/demo_workflow.py): real data,
a real model, a few steps.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ptl_cli import atomic
from ptl_cli.runs import Run


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err: str) -> bool:
    return err.count("\n") == 1 and "Traceback" not in err and err.startswith("ptl: error:")


def records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in Run(run).metrics()]


@pytest.fixture
def done(cli, demo_site, one_thread, tmp_path) -> Path:
    """A completed demo run."""
    run = tmp_path / "done"
    code, _, err = cli("demo", "--out", run, "--quiet")
    assert code == 0, err
    return run


HOLD = textwrap.dedent(
    """
    import sys, time
    from ptl_cli.runs import Run
    Run(sys.argv[1]).claim(new=sys.argv[2] == "new")
    print("held", flush=True)
    time.sleep(60)
    """
)


def hold(path: Path, new: bool = False) -> subprocess.Popen:
    """Another process that claims ``path`` (as a running ptl command does) and keeps it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), "new" if new else "old"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


# -- one writer per run ------------------------------------------------------------------------
def test_a_second_writer_gets_one_line_and_touches_nothing(cli, done, tmp_path):
    Run(done).release()  # this test process wrote the run: from here on it is another process
    other = hold(done)
    try:
        before = files_of(done)
        for command in (("resume", done), ("export", done), ("export", done, "-o", tmp_path / "m.pt")):
            code, _, err = cli(*command)
            assert code == 2 and one_line(err), (command, err)
            assert f"is being written by process {other.pid}" in err
        assert files_of(done) == before
    finally:
        other.kill()
        other.wait()
    # the kernel dropped the lock with the process (SIGKILL leaves no stale lock)
    code, _, err = cli("resume", done)
    assert code == 2 and "already completed" in err


def test_two_runs_given_one_out_folder_at_once(cli, demo_site, one_thread, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    other = hold(out, new=True)  # another `ptl demo --out shared` got there first
    try:
        code, _, err = cli("demo", "--out", out, "--quiet")
        assert code == 2 and one_line(err) and "already holds a run" in err
        assert out.is_dir() and (out / ".lock").is_file()  # the other's folder is still there
    finally:
        other.kill()
        other.wait()


def test_two_real_processes_race_for_one_out(demo_site, one_thread, tmp_path):
    out = tmp_path / "race"
    command = [sys.executable, "-m", "ptl_cli", "demo", "--out", str(out), "--quiet"]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=120), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 2], results
    assert one_line(results[1][1])
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    steps = [r["step"] for r in records(out) if r["stage"] == "train"]
    assert steps == list(range(1, 13))  # one run's records, not two interleaved


# -- nothing written over a file ptl did not create ----------------------------------------
def test_outputs_never_land_on_existing_files(cli, done, tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    (tmp_path / "ro").mkdir()
    before = {**files_of(done), other: other.read_bytes()}
    refused = [
        ("export", done, "-o", done / "final.pt"),
        ("export", done, "-o", done / "run.json", "--force"),  # --force never reaches a run's files
        ("export", done, "-o", tmp_path),  # a directory
        ("export", done, "-o", other),  # an existing file, without --force
        ("export", done, "-o", other / "x.pt"),  # under a file
        ("runs", "compare", done, "--plot", done / "run.json"),
        ("runs", "compare", done, "--plot", done / "curves.png", "--force"),
        ("runs", "compare", done, "--plot", other),
        ("demo", "--out", other, "--quiet"),
        ("demo", "--out", other / "run", "--quiet"),
        ("demo", "--out", done, "--quiet"),
        ("demo", "--out", done, "--dry-run"),
        ("demo", "--out", other / "run", "--dry-run"),
    ]
    for command in refused:
        code, _, err = cli(*command)
        assert code == 2 and one_line(err), (command, err)
    assert {**files_of(done), other: other.read_bytes()} == before
    code, _, err = cli("runs", "compare", done, "--plot", other, "--force")  # outside any run: fine
    assert code == 0, err
    assert other.read_bytes()[:4] == b"\x89PNG"


def test_a_cache_or_runs_dir_that_is_a_file(cli, demo_site, tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for variable in ("PTL_CACHE_DIR", "PTL_RUNS_DIR"):
        monkeypatch.setenv(variable, str(afile))
        for command in (("demo", "--dry-run"), ("sweep", "--recipe", "demo-default", "--dry-run")):
            code, _, err = cli(*command)
            assert code == 2 and one_line(err) and f"${variable}" in err, (variable, command, err)
        monkeypatch.delenv(variable)
    assert afile.read_text() == "x"


def test_atomic_writes_keep_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    atomic._UMASK.clear()
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
        atomic._UMASK.clear()


# -- every file ptl reads may be broken ------------------------------------------------------
@pytest.mark.parametrize("text", [b"{}", b"[]", b'{"status": "completed"}', b"\xff\xfe{", b"null", b""])
def test_a_broken_run_json_is_named_and_listing_goes_on(cli, done, tmp_path, text):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_bytes(text)
    for command in (("runs", "show", broken), ("resume", broken), ("export", broken)):
        code, _, err = cli(*command)
        assert code == 2 and one_line(err) and str(broken / "run.json") in err, (command, err)
    code, out, err = cli("runs", "list", "--json", "--root", tmp_path)
    assert code == 0, err
    status = {Path(r["path"]).name: r["status"] for r in json.loads(out)}
    assert status == {"done": "completed", "broken": "broken"}


def test_null_and_torn_metrics_lines_are_skipped(cli, done):
    with (done / "metrics.jsonl").open("a") as fh:
        fh.write('null\n[1, 2]\n{"stage": "te')
    code, out, err = cli("runs", "show", done, "--json")
    assert code == 0, err
    assert json.loads(out)["at"] == "test step 12"
    Run(done).log({"stage": "later", "step": 13, "loss": 1.0})  # never glued to the torn line
    assert records(done)[-1] == {"stage": "later", "step": 13, "loss": 1.0}


def test_resume_refuses_a_recipe_changed_since_the_run_started(cli, demo_site, one_thread, tmp_path):
    run = tmp_path / "run"
    assert cli("demo", "--set", "train.stop_at=4", "--out", run, "--quiet")[0] == 130
    recipe = run / "recipe.toml"
    recipe.write_text(recipe.read_text().replace("lr = 0.1", "lr = 0.5"))
    before = files_of(run)
    code, _, err = cli("resume", run, "--quiet")
    assert code == 2 and one_line(err)
    assert "changed since the run started" in err and "train.lr: 0.1 -> 0.5" in err
    assert files_of(run) == before


# -- resume exact across a failed write at any point -------------------------------------------
def test_a_failed_write_anywhere_then_resume_equals_an_uninterrupted_run(
    cli, demo_site, one_thread, tmp_path, monkeypatch
):
    steps = ("--set", "train.steps=4", "--set", "train.checkpoint_every=2")
    reference = tmp_path / "reference"
    writes: list[str] = []
    real_write, real_append = atomic.write_bytes, atomic.append_text

    def counting(real):
        def write(path, data):
            writes.append(Path(path).name)
            if len(writes) == fail_at:
                raise atomic.write_failure(path, OSError(errno.ENOSPC, "No space left on device"))
            return real(path, data)

        return write

    monkeypatch.setattr(atomic, "write_bytes", counting(real_write))
    monkeypatch.setattr(atomic, "append_text", counting(real_append))
    fail_at = 0
    assert cli("demo", *steps, "--out", reference, "--quiet")[0] == 0
    total, expected = len(writes), records(reference)
    expected_metrics = json.loads((reference / "run.json").read_text())["metrics"]
    assert total >= 12 and "final.pt" in writes and "metrics.jsonl" in writes
    for fail_at in range(1, total + 1):
        writes.clear()
        run = tmp_path / f"fail-{fail_at}"
        code, _, err = cli("demo", *steps, "--out", run, "--quiet")
        assert code == 1 and one_line(err) and "No space left" in err, (fail_at, err)
        failed_on = writes[-1]
        fail_at = 0  # the disk has room again
        if not (run / "run.json").is_file():  # failed before the run was recorded: nothing left
            assert not run.exists() or not any(run.iterdir()), fail_at
            continue
        code, _, err = cli("resume", run, "--quiet")
        assert code == 0, (failed_on, err)
        assert records(run) == expected, failed_on
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "completed" and info["metrics"] == expected_metrics, failed_on
        assert (run / "report.md").is_file() and (run / "final.pt").is_file(), failed_on


def test_a_relogged_record_replaces_the_first(tmp_path):
    run = Run.create("demo", "x", {"kind": "demo"}, out=str(tmp_path / "r"))
    for step in (1, 2, 3):
        run.log({"stage": "train", "step": step, "loss": float(step)})
    run.log({"stage": "test", "step": 3, "test_acc": 0.5})
    run.log({"stage": "test", "step": 3, "test_acc": 0.75})  # again, after a crash and resume
    run.log({"stage": "train", "step": 2, "loss": 9.0})
    assert records(run.path) == [
        {"stage": "train", "step": 1, "loss": 1.0},
        {"stage": "train", "step": 2, "loss": 9.0},
        {"stage": "train", "step": 3, "loss": 3.0},
        {"stage": "test", "step": 3, "test_acc": 0.75},
    ]
