"""Engine services one by one: devices, precision, progress bars, interrupts, the report."""

from __future__ import annotations

import io
import os
import signal

import pytest
import torch
from rich.console import Console

from ptl_cli.engine.device import Precision, resolve_device
from ptl_cli.engine.interrupt import InterruptGuard
from ptl_cli.engine.progress import Progress
from ptl_cli.engine.report import curve_series, markdown_table, plot_curves
from ptl_cli.engine.seeding import generator_for
from ptl_cli.errors import UserError


def test_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(UserError, match="'gpu' is not a device; use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available here"):
            resolve_device("cuda:0")


def test_precision_is_fp32_on_cpu_whatever_was_asked():
    for name in ("fp32", "bf16-mixed", "fp16-mixed"):
        policy = Precision(name, torch.device("cpu"))
        assert not policy.enabled and not policy.scaler.is_enabled()
        with policy.autocast():
            assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    policy = Precision("fp16-mixed", torch.device("cpu"))
    policy.backward_and_step(model(torch.ones(4, 3)).sum(), optimizer)
    assert not torch.equal(before, model.weight)  # a plain step


def test_progress_is_a_bar_on_a_terminal_lines_off_it_and_silent_with_quiet():
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    assert not Progress(terminal, enabled=False).enabled  # --quiet
    bar = Progress(terminal, enabled=True)
    assert bar.bars and not bar.lines
    with bar.task("train", total=4) as advance:
        for _ in range(4):
            bar.record({"stage": "train", "loss": 0.5, "acc": 0.75})
            advance()
    shown = terminal.file.getvalue()
    assert "train" in shown and "loss 0.5000" in shown and "train acc 0.7500" in shown
    piped = Console(file=io.StringIO())
    with Progress(piped, enabled=True).task("train", total=4) as advance:
        advance(loss=0.5)
    assert piped.file.getvalue().splitlines()[0] == "[train] start step 0/4 (0%)"  # Slurm, nohup: lines
    quiet = Console(file=io.StringIO())
    with Progress(quiet, enabled=False).task("train", total=4) as advance:
        advance(loss=0.5)
    assert quiet.file.getvalue() == ""


def test_a_signal_becomes_a_request_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    before_int = signal.getsignal(signal.SIGINT)  # Python's handler, or SIG_IGN under `cmd &` in a script
    with InterruptGuard() as guard:
        assert guard.requested is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.requested == "SIGTERM"  # the loop saves and stops at its next step
        os.kill(os.getpid(), signal.SIGTERM)  # repeated by a process manager: still a clean stop
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C while waiting: stop at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    with InterruptGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.requested == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before_int


def test_generator_for_is_a_pure_function_of_seed_and_salts():
    a = torch.rand(4, generator=generator_for(3, 100))
    assert torch.equal(a, torch.rand(4, generator=generator_for(3, 100)))
    assert not torch.equal(a, torch.rand(4, generator=generator_for(3, 101)))
    assert not torch.equal(a, torch.rand(4, generator=generator_for(4, 100)))


def test_report_table_and_curves(tmp_path):
    assert markdown_table(["a", "b"], [[0.123456, 12345.678], ["x", 3]]) == (
        "| a | b |\n|---|---|\n| 0.1235 | 1.235e+04 |\n| x | 3 |\n"
    )
    assert not plot_curves([{"stage": "train"}], tmp_path / "none.png")
    records = [{"step": s, "stage": "train", "loss": 1 / (s + 1), "note": "x"} for s in range(5)]
    records.append({"step": 4, "stage": "test", "test_acc": 0.8})
    assert plot_curves(records, tmp_path / "curves.png")
    # values logged once per stage (a pool's size and seconds, a final accuracy) draw no panel of dots
    records += [{"step": 0, "stage": "pp-pool", "pool_samples": 64, "pool_seconds": 0.1}]
    records += [{"step": 4, "stage": "other", "test_acc": 0.7}]
    assert sorted(curve_series(records)) == ["loss"]
    records += [{"step": 2, "stage": "test", "test_acc": 0.6}]  # two points: a curve
    assert sorted(curve_series(records)) == ["loss", "test_acc"]
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
