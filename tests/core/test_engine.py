"""Runs end to end through the core engine, with the throwaway ``demo`` workflow plugin.

A real (tiny) training run on real images: the run directory, the report, ``ptl runs show``,
a real SIGTERM and ``ptl resume`` ending bit-identical to an uninterrupted run, a truncated
checkpoint, a NaN loss, and a run that another live process owns.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptl_cli.runs import Run


def records(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock field."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines if line]


def final_model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "final.pt", weights_only=True)["model"]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical final weights and identical metric logs."""
    wa, wb = final_model(a), final_model(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    assert records(a) == records(b)


def test_a_run_records_recipe_metrics_report_and_summary(cli, show, demo_site, one_thread, tmp_path):
    run = tmp_path / "runs" / "first"
    code, out, err = cli("demo", "--out", run, "--quiet")
    assert code == 0, err
    assert "test accuracy" in out  # the results table

    summary = show(run)
    assert summary["kind"] == "demo" and summary["status"] == "completed" and summary["error"] == ""
    recipe = summary["recipe"]  # the fully resolved recipe: file values and every default
    assert recipe["seed"] == 5 and recipe["name"] == "demo-default"
    assert recipe["train"]["lr"] == 0.1 and recipe["compute"]["precision"] == "fp32"
    acc = summary["metrics"]["test_acc"]
    assert isinstance(acc, float) and 0.3 < acc <= 1.0  # a fraction, and well above chance (0.1)

    logged = records(run)
    assert [r["step"] for r in logged if r["stage"] == "train"] == list(range(1, 13))
    assert logged[-1] == {"step": 12, "stage": "test", "test_acc": acc}
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["step-000000009.pt", "step-000000012.pt"]  # the newest two
    saved = torch.load(run / "checkpoints" / "step-000000012.pt", weights_only=True)
    assert {"model", "optimizer", "step", "rng"} <= saved.keys() and "numpy" in saved["rng"]
    report = (run / "report.md").read_text()
    assert "| test accuracy |" in report and "curves.png" in report
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Run(run).recipe_data() == recipe

    code, out, _ = cli("runs", "list", "--json", "--root", tmp_path / "runs")
    (row,) = json.loads(out)
    assert code == 0 and row["status"] == "completed" and row["metrics"]["test_acc"] == acc


def test_sigterm_then_resume_equals_an_uninterrupted_run(cli, show, demo_site, one_thread, tmp_path):
    steps = ["--set", "train.steps=30"]
    reference = tmp_path / "reference"
    assert cli("demo", *steps, "--out", reference, "--quiet")[0] == 0

    cut = tmp_path / "cut"
    command = [sys.executable, "-m", "ptl_cli", "demo", *steps, "--set", "train.sleep=0.05"]
    proc = subprocess.Popen([*command, "--out", str(cut), "--quiet"], stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not list((cut / "checkpoints").glob("step-*.pt")):
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip(f"the run ended before it could be interrupted: {proc.stderr.read()[-500:]}")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130, proc.stderr.read()
    assert show(cut)["status"] == "interrupted"
    stopped_at = torch.load(sorted((cut / "checkpoints").iterdir())[-1], weights_only=True)["step"]
    assert 3 <= stopped_at < 30  # a checkpoint written on the signal, mid-run

    code, _, err = cli("resume", cut, "--quiet")
    assert code == 0, err
    assert show(cut)["status"] == "completed"
    assert show(cut)["metrics"] == show(reference)["metrics"]
    assert_same_run(cut, reference)


def test_truncated_checkpoint_falls_back_to_the_previous_one(cli, demo_site, one_thread, tmp_path):
    reference = tmp_path / "reference"
    assert cli("demo", "--out", reference, "--quiet")[0] == 0
    cut = tmp_path / "cut"
    assert cli("demo", "--set", "train.stop_at=8", "--out", cut, "--quiet")[0] == 130
    checkpoints = cut / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000000006.pt", "step-000000008.pt"]
    newest = checkpoints / "step-000000008.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # power cut mid-write
    # the stop is part of the recipe here and acts on a fresh run only: the resumed run goes on

    code, out, err = cli("resume", cut, "--quiet")
    assert code == 0, err
    said = "".join(out.split())  # the console may wrap the line anywhere
    assert "step-000000008.ptisunreadable" in said and "fallingbacktostep-000000006.pt" in said
    assert (checkpoints / "step-000000008.pt.corrupt").is_file()  # kept for a post-mortem, not reused
    assert_same_run(cut, reference)


def test_nan_loss_fails_with_exit_1_and_keeps_the_last_checkpoint(cli, show, demo_site, one_thread, tmp_path):
    run = tmp_path / "nan"
    code, _, err = cli("demo", "--set", "train.nan_at=5", "--out", run, "--quiet")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "loss became nan at step 5" in err and "step-000000003.pt" in err
    summary = show(run)
    assert summary["status"] == "failed" and "loss became nan" in summary["error"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000000003.pt"]


def test_a_run_owned_by_a_live_process_is_not_resumed(cli, show, demo_site, one_thread, tmp_path):
    run = tmp_path / "run"
    assert cli("demo", "--set", "train.stop_at=4", "--out", run, "--quiet")[0] == 130
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "ptl", "resume"])
    try:
        Run(run).update(status="running", pid=other.pid)  # as a second terminal would see it
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        code, _, err = cli("resume", run, "--quiet")
        assert code == 2 and f"is being run by process {other.pid}" in err and err.count("\n") == 1
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    finally:
        other.kill()
        other.wait()
    code, _, err = cli("resume", run, "--quiet")  # its owner is gone: an interrupted run in fact
    assert code == 0, err
    assert show(run)["status"] == "completed"
