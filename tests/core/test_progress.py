"""What a run shows while it trains: plain log lines off a terminal, nothing with ``--quiet``."""

from __future__ import annotations

import io
import re

from rich.console import Console

from ptl_cli.engine.progress import Progress, format_duration


def test_off_a_terminal_a_run_writes_start_periodic_and_end_lines(cli, demo_site, one_thread, tmp_path):
    # the test's stdout is not a terminal, as under Slurm or nohup: lines, not bars
    code, out, err = cli("demo", "--out", tmp_path / "a", "--log-every-s", "0")
    assert code == 0, err
    lines = [x for x in out.splitlines() if x.startswith("[demo]")]
    assert lines[0] == "[demo] start step 0/12 (0%)"
    done = r"\[demo\] done step 12/12 \(100%\)  loss \d\.\d{4}  in \d+\.\ds"
    assert re.fullmatch(done, lines[-1]), lines[-1]
    periodic = lines[1:-1]  # every record is due at --log-every-s 0; the last is said by "done"
    assert len(periodic) == 11
    assert re.fullmatch(r"\[demo\] step 1/12 \(8%\)  loss \d\.\d{4}  \S+ step/s  ETA \S+", periodic[0])

    # the default (30 s) on a run of a second: its start and end only
    code, out, err = cli("demo", "--out", tmp_path / "b")
    assert code == 0, err
    assert [x.split("  ")[0] for x in out.splitlines() if x.startswith("[demo]")] == [
        "[demo] start step 0/12 (0%)",
        "[demo] done step 12/12 (100%)",
    ]
    code, out, err = cli("demo", "--out", tmp_path / "c", "--quiet", "--log-every-s", "0")
    assert code == 0 and "[demo]" not in out + err


def test_lines_carry_the_records_values_eta_and_a_whole_run_eta():
    now = [0.0]
    console = Console(file=io.StringIO(), width=200)
    progress = Progress(console, enabled=True, log_every_s=30, clock=lambda: now[0])
    progress.plan({"scratch": 100, "pp-pool": 0, "pssl": 100})
    with progress.task("scratch", 100) as advance:
        for i in range(100):
            now[0] += 1.0
            progress.record({"stage": "scratch", "step": i + 1, "loss": 2.0 / (i + 1), "lr": 0.03})
            advance(1)
    with progress.task("pp-pool", 4, unit="shard") as advance:
        now[0] += 5.0
        advance(4)
    with progress.task("pssl", 100, completed=40) as advance:  # resumed: 40 steps took no time here
        for _ in range(60):
            now[0] += 2.0
            advance(1)
    lines = console.file.getvalue().splitlines()
    assert lines[:3] == [
        "[scratch] start step 0/100 (0%)",
        # a line every 30 s: 1 step/s, 70 steps left here, 170 in the run (pools take no steps)
        "[scratch] step 30/100 (30%)  loss 0.0667  lr 0.03  1 step/s  ETA 1m 10s  run ETA 2m 50s",
        "[scratch] step 60/100 (60%)  loss 0.0333  lr 0.03  1 step/s  ETA 40s  run ETA 2m 20s",
    ]
    assert lines[4] == "[scratch] done step 100/100 (100%)  loss 0.0200  lr 0.03  in 1m 40s"
    assert lines[5:7] == ["[pp-pool] start shard 0/4 (0%)", "[pp-pool] done shard 4/4 (100%)  in 5.0s"]
    assert lines[7] == "[pssl] resuming at step 40/100 (40%)"
    # 15 steps in 30 s: 0.5 step/s; the whole run's pace is 115 steps in 130 s
    assert lines[8] == "[pssl] step 55/100 (55%)  0.5 step/s  ETA 1m 30s  run ETA 51s"
    assert lines[-1] == "[pssl] done step 100/100 (100%)  in 2m 00s"


def test_quiet_and_other_ranks_show_nothing_and_durations_read_as_time():
    console = Console(file=io.StringIO(), width=200)
    progress = Progress(console, enabled=False, log_every_s=0)
    with progress.task("x", 3) as advance:
        progress.record({"loss": 1.0})
        advance(3)
    assert console.file.getvalue() == ""
    assert [format_duration(s) for s in (3.25, 42.4, 116.055, 1075, 4000)] == [
        "3.2s",
        "42s",
        "1m 56s",
        "17m 55s",
        "1h 06m",
    ]


def test_the_eta_follows_the_present_pace_when_steps_grow_costlier():
    now = [0.0]
    console = Console(file=io.StringIO(), width=200)
    progress = Progress(console, enabled=True, log_every_s=60, clock=lambda: now[0])
    with progress.task("lanes", 2000) as advance:
        for step in range(1100):  # 1000 cheap steps (0.1 s), then P-SSL's costlier ones (2 s)
            now[0] += 0.1 if step < 1000 else 2.0
            advance(1)
        last = console.file.getvalue().splitlines()[-1]
    # the last two minutes ran at 0.5 step/s: 928 steps left take 31 min (the whole task's
    # average, 4.4 step/s at that line, would say 3m 31s)
    assert last == "[lanes] step 1072/2000 (53%)  0.5 step/s  ETA 30m 56s"
