"""``ptl sweep`` end to end: real tiny prune cells as child processes, interrupted and resumed,
aggregated into a table, a CSV and a plot; bad grids are one-line errors at ``--dry-run``."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from ptl_cli.runs import Run
from ptl_prune.export import bit_equal

# Conv-2 at widths 1/8 and 1/4 on 96 real images: 3 epochs of 3 steps, a checkpoint after each step.
BASE = """
extends = "prune-quickstart"
[model]
name = "conv2"
[data]
train_limit = 96
test_limit = 64
val_fraction = 0.1
[train]
epochs = 3
batch_size = 32
checkpoint_every = 1
log_every = 1
"""
GRID = ["--grid", "model.width=0.125,0.25", "--grid", "pruner.params.sparsity=0.3,0.5", "--seeds", "0,1"]


@pytest.fixture
def base(tmp_path) -> Path:
    path = tmp_path / "tiny-prune.toml"
    path.write_text(BASE)
    return path


def records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def cells(sweep: Path) -> dict[str, dict]:
    return {c["id"]: c for c in json.loads((sweep / "sweep.json").read_text())["cells"]}


def test_dry_run_lists_every_cell_and_writes_nothing(cli, base, tmp_path):
    code, out, err = cli("sweep", "--recipe", base, *GRID, "--out", tmp_path / "sw", "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert len(plan["cells"]) == 8
    points = {
        (c["point"]["model.width"], c["point"]["pruner.params.sparsity"], c["seed"]) for c in plan["cells"]
    }
    assert points == {(w, p, s) for w in (0.125, 0.25) for p in (0.3, 0.5) for s in (0, 1)}
    assert not (tmp_path / "sw").exists()


@pytest.mark.parametrize(
    ("grid", "expected"),
    [
        ("model.widht=0.25,0.5", "unknown key `model.widht`"),
        ("pruner.params.sparsity=0.5,1.5", "pruner.params.sparsity"),
        ("pruner.name=iterand,magic", "magic"),
        ("model.width", "expected key.path=v1,v2"),
    ],
)
def test_bad_grids_are_one_line_errors_at_dry_run(cli, base, grid, expected):
    code, out, err = cli("sweep", "--recipe", base, "--grid", grid, "--dry-run")
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_a_sweep_table_in_the_recipe_is_expanded_and_ignored_by_single_runs(cli, base, tmp_path):
    table = '\n[sweep]\nseeds = [3, 4]\n[sweep.grid]\n"model.width" = [0.125, 0.25, 0.5]\n'
    path = tmp_path / "with-table.toml"
    path.write_text(BASE + table)
    code, out, err = cli("sweep", "--recipe", path, "--dry-run", "--json")
    assert code == 0, err
    plan = json.loads(out)
    order = [(c["point"]["model.width"], c["seed"]) for c in plan["cells"]]
    assert order[:3] == [(0.125, 3), (0.125, 4), (0.25, 3)]
    assert len(plan["cells"]) == 6
    code, out, err = cli("prune", "--recipe", path, "--dry-run")  # a single run ignores [sweep]
    assert code == 0, err


def _interrupt_mid_way(command: list[str], sweep: Path, env: dict[str, str]) -> int:
    """Start the sweep, SIGTERM it once one cell completed and another is early in its training
    (a checkpoint of its first three steps, of nine)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        runs = sweep / "runs"
        done = [r for r in runs.glob("*/final.pt")] if runs.is_dir() else []
        early = [p for p in runs.glob("*/checkpoints/step-*.pt") if int(p.stem.split("-")[1]) <= 3]
        if done and any(not (p.parents[1] / "final.pt").exists() for p in early):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    proc.wait(timeout=120)
    return proc.returncode


def test_prune_sweep_interrupted_resumed_and_aggregated(cli, one_thread, base, tmp_path):
    """2 widths x 2 sparsities x 2 seeds: SIGTERM mid-way, run the same command again; every cell
    completes, an interrupted cell equals the same cell run without interruption, and ``sweep
    show`` aggregates the seeds (the sparsity column is the grid's own value, exactly)."""
    sweep = tmp_path / "sw"
    args = ["sweep", "--recipe", str(base), *GRID, "--jobs", "2", "--out", str(sweep), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = _interrupt_mid_way([sys.executable, "-m", "ptl_cli", *args], sweep, env)
    assert code == 130
    before = cells(sweep)
    assert any(c["status"] == "completed" for c in before.values())
    interrupted = [i for i, c in before.items() if c["status"] == "interrupted"]
    assert interrupted, before
    partial = [i for i in interrupted if list((sweep / "runs" / i / "checkpoints").glob("step-*.pt"))]
    assert partial  # stopped mid-way, with a checkpoint to continue from
    code, _, err = cli(*args)  # the same command again
    assert code == 0, err
    after = cells(sweep)
    assert {c["status"] for c in after.values()} == {"completed"}
    assert all("resume" in (sweep / "logs" / f"{i}.log").read_text() for i in interrupted)
    # an interrupted cell ends exactly where an uninterrupted run of its recipe ends
    ident = partial[0]
    reference = tmp_path / "reference"
    code, _, err = cli("run", "--recipe", sweep / "cells" / f"{ident}.toml", "--out", reference, "--quiet")
    assert code == 0, err
    assert records(sweep / "runs" / ident) == records(reference)
    a = torch.load(reference / "final.pt", weights_only=True)["model"]
    b = torch.load(sweep / "runs" / ident / "final.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(bit_equal(a[k], b[k]) for k in a)
    # the progress line of a running cell says where its newest record is (not a made-up "0/?")
    last = records(sweep / "runs" / ident)[-1]
    position = Run(sweep / "runs" / ident).position()
    assert position.endswith(f"step {last['step']}") and "?" not in position

    code, out, err = cli("sweep", "show", sweep, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert len(shown["rows"]) == 4
    for row in shown["rows"]:
        infos = [json.loads((sweep / "runs" / c["id"] / "run.json").read_text()) for c in row["cells"]]
        accs = [info["metrics"]["test_acc"] for info in infos]
        stat = row["metrics"]["test_acc"]
        assert stat["n"] == 2 and stat["mean"] == pytest.approx(statistics.fmean(accs))
        assert stat["std"] == pytest.approx(statistics.stdev(accs))
        assert row["metrics"]["sparsity"]["mean"] == pytest.approx(
            row["point"]["pruner.params.sparsity"], abs=1e-3
        )
    with (sweep / "results.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [(float(r["model.width"]), float(r["pruner.params.sparsity"])) for r in table] == [
        (0.125, 0.3), (0.125, 0.5), (0.25, 0.3), (0.25, 0.5),
    ]  # fmt: skip
    assert Image.open(shown["plot"]).size[0] > 100
    code, out, err = cli("sweep", "show", sweep)
    assert code == 0 and "±" in out and "2/2" in out, err
    code, _, err = cli("resume", sweep, "--quiet")  # ptl resume SWEEP: nothing left to run
    assert code == 0 and cells(sweep) == after, err
    base.write_text(BASE.replace("epochs = 3", "epochs = 4"))  # the same command, another recipe
    code, _, err = cli(*args)
    assert code == 2 and "changed since" in err
    code, _, err = cli("sweep", "show", sweep, "--x", "pruner.params.sparsity", "--hue", "model.widht")
    assert code == 2 and "model.widht" in err

    # runs compare: side by side, the differing recipe keys, overlaid curves
    first, second = (sweep / "runs" / f"width=0.125-sparsity={p}-seed=0" for p in (0.3, 0.5))
    code, out, err = cli("runs", "compare", first, second, "--json", "--plot", tmp_path / "cmp.png")
    assert code == 0, err
    compared = json.loads(out)
    assert compared["recipe_differences"]["pruner.params.sparsity"] == [0.3, 0.5]
    assert compared["metrics"]["sparsity"] == pytest.approx([0.3, 0.5], abs=1e-3)
    assert Image.open(tmp_path / "cmp.png").size[0] > 100


def test_a_failing_cell_is_reported_and_the_others_complete(cli, one_thread, base, tmp_path):
    sweep = tmp_path / "sw"
    grid = ["--grid", "train.lr=0.1,1e30", "--set", "pruner.name=sgd", "--set", "model.width=0.125"]
    grid += ["--set", "train.epochs=1"]
    code, out, err = cli("sweep", "--recipe", base, *grid, "--jobs", "2", "--out", sweep)
    assert code == 1
    status = {c["point"]["train.lr"]: c for c in cells(sweep).values()}
    bad = next(lr for lr in status if lr != 0.1)
    assert status[0.1]["status"] == "completed"
    assert status[bad]["status"] == "failed" and "loss became" in status[bad]["error"]
    # off a terminal (as under Slurm): a plain line per cell's start and end
    lines = [x for x in err.splitlines() if x.startswith("[sweep] ")]
    ids = {c["id"]: c for c in cells(sweep).values()}
    assert {f"[sweep] start {i}" for i in ids} <= set(lines)
    good = next(i for i, c in ids.items() if c["status"] == "completed")
    assert any(x.startswith(f"[sweep] completed {good} (") and "cells completed)" in x for x in lines)
    assert any(x.startswith("[sweep] failed ") and "loss became" in x for x in lines)


def test_a_recipe_axis_sweeps_methods_whose_recipes_differ(cli, tmp_path):
    """The paper's method comparison: each cell starts from its method's own recipe (IteRand's has
    re-draw keys edge-popup's schema refuses), the other axes apply to all of them."""
    grid = ["--grid", "recipe=iterand-conv6-cifar10,edge-popup-conv6-cifar10", "--grid", "model.width=0.5,2"]
    code, out, err = cli("sweep", *grid, "--seeds", "0", "--out", tmp_path / "sw", "--dry-run", "--json")
    assert code == 0, err
    points = [(c["point"]["recipe"], c["point"]["model.width"]) for c in json.loads(out)["cells"]]
    assert points == [(r, w) for r in ("iterand-conv6-cifar10", "edge-popup-conv6-cifar10") for w in (0.5, 2)]
    code, _, err = cli(
        "sweep",
        "--grid",
        "pruner.name=iterand,edge-popup",
        "--recipe",
        "iterand-conv6-cifar10",
        "--dry-run",
    )
    assert code == 2 and "unknown key `pruner.params.rerand_freq`" in err  # why the recipe axis exists
    code, _, err = cli("sweep", "--grid", "recipe=iterand-conv6-cifar10,transfer-quickstart", "--dry-run")
    assert code == 2 and "a `transfer` recipe in a sweep of `prune` runs" in err


def test_a_cell_another_live_process_runs_is_left_alone(cli, one_thread, base, tmp_path):
    """After a sweep was killed with SIGKILL its cells may still run; running the sweep again
    leaves such a cell to its process (and says so) while the others run."""
    from ptl_cli.runs import Run

    sweep = tmp_path / "sw"
    args = ["sweep", "--recipe", base, "--grid", "model.width=0.125", "--seeds", "0,1", "--out", sweep]
    args += ["--set", "train.epochs=1", "--quiet"]
    from ptl_cli import sweep as sweeps

    request = sweeps.Request(str(base), ["model.width=0.125"], "0,1", ["train.epochs=1"], out=str(sweep))
    planned, _, data = sweeps.plan(request)
    sweeps.prepare(planned, data)  # the sweep directory, as the killed sweep left it
    ident = "width=0.125-seed=0"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "ptl"])
    try:
        run = Run.create("prune", "tiny", {"kind": "prune"}, str(sweep / "runs" / ident))
        run.update(pid=holder.pid)  # as if that process were running the cell
        code, _, err = cli(*args)
        assert code == 1
        assert f"is still being run by process {holder.pid}; left to it" in " ".join(err.split())
        status = {i: c["status"] for i, c in cells(sweep).items()}
        assert status == {ident: "running", "width=0.125-seed=1": "completed"}
    finally:
        holder.kill()
        holder.wait()
