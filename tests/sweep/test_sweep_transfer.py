"""A transfer sweep over two target class sets: real tiny transfer runs (bundled BigGAN and source
classifier, Fashion-MNIST half B targets), interrupted, resumed, aggregated per target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

TINY = """
extends = "transfer-quickstart"
stages = ["scratch", "pp"]
[model]
arch = "conv2"
width = 0.25
[target]
labels_per_class = 4
[pool]
shard_size = 32
gen_batch_size = 16
[pp]
samples = 64
[pp.train]
steps = 6
batch_size = 16
log_every = 2
checkpoint_every = 2
[train]
steps = 6
batch_size = 8
log_every = 2
checkpoint_every = 2
[compute]
device = "cpu"
"""
TARGETS = "target.classes=[[0, 2, 3, 4], [5, 7, 9]]"  # tops, footwear


def test_two_target_transfer_sweep_interrupted_resumed_and_shown(cli, one_thread, tmp_path):
    recipe = tmp_path / "tiny-transfer.toml"
    recipe.write_text(TINY)
    sweep = tmp_path / "sw"
    pool = f"pool.dir={json.dumps(str(tmp_path / 'pools'))}"
    args = ["sweep", "--recipe", str(recipe), "--grid", TARGETS, "--seeds", "0", "--set", pool]
    args += ["--out", str(sweep), "--quiet"]
    code, out, err = cli(*args, "--dry-run", "--json")
    assert code == 0, err
    assert [c["point"]["target.classes"] for c in json.loads(out)["cells"]] == [[0, 2, 3, 4], [5, 7, 9]]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ptl_cli", *args], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        if list((sweep / "runs").glob("*/checkpoints/*.pt")):  # the first cell is under way
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    assert proc.wait(timeout=120) == 130, proc.stderr.read().decode()[-2000:]
    code, _, err = cli("resume", sweep, "--quiet")  # ptl resume SWEEP
    assert code == 0, err
    cells = json.loads((sweep / "sweep.json").read_text())["cells"]
    assert [c["status"] for c in cells] == ["completed", "completed"]
    logs = [(sweep / "logs" / f"{c['id']}.log").read_text() for c in cells]
    assert " resume " in logs[0]  # the interrupted cell was continued, not restarted

    code, out, err = cli("sweep", "show", sweep, "--json")
    assert code == 0, err
    shown = json.loads(out)
    metrics = [row["metrics"] for row in shown["rows"]]
    for row, classes in zip(shown["rows"], ([0, 2, 3, 4], [5, 7, 9]), strict=True):
        assert row["point"]["target.classes"] == classes
        recorded = tomllib.loads((sweep / "runs" / row["cells"][0]["id"] / "recipe.toml").read_text())
        assert recorded["target"]["classes"] == classes
        for key in ("scratch_test_acc", "pp_test_acc"):
            assert 0.0 <= row["metrics"][key]["mean"] <= 1.0
    assert metrics[0]["scratch_test_acc"] != metrics[1]["scratch_test_acc"]  # the targets differ
    assert Path(shown["csv"]).is_file() and Path(shown["plot"]).name == "test_acc.png"
