"""``ptl train-source``: tiny end-to-end runs on the bundled pack, interrupt + resume, export."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptl_cli.cli import main
from ptl_generators import weights as W

TINY_BIGGAN = """
extends = "biggan-fashion04"
[data]
dataset = "fashion-pack"
classes = [0, 1, 2]
[train]
steps = 16
batch_size = 8
log_every = 4
checkpoint_every = 4
threads = 1
[biggan]
channel_width = 2
z_dim = 8
class_embed_dim = 8
d_channels = [4, 4, 4]
ema_start = 2
standing_batches = 1
standing_batch_size = 16
[eval]
classifier = "none"
"""


def _recipe(tmp_path: Path, text: str, name: str = "tiny.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _ptl(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ptl_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _tensors(run: Path) -> dict[str, torch.Tensor]:
    return W.read_single(run / "model.safetensors", "biggan")[0]


def test_biggan_run_interrupted_and_resumed_ends_exactly_like_an_uninterrupted_one(tmp_path):
    recipe = _recipe(tmp_path, TINY_BIGGAN)
    full, cut = tmp_path / "full", tmp_path / "cut"
    args = ("train-source", "generator", "--kind", "biggan", "--recipe", recipe, "--quiet", "--out")
    # the interrupted run: SIGINT as soon as its first checkpoint exists
    proc = _ptl(*args, str(cut))
    deadline = time.monotonic() + 300
    while not list((cut / "checkpoints").glob("step-*.pt")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=300)[0]
    info = json.loads((cut / "run.json").read_text())
    if info["status"] == "completed":  # pragma: no cover - the machine was too slow to interrupt it
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, output
    assert info["status"] == "interrupted"
    resumed = subprocess.run(
        [sys.executable, "-m", "ptl_cli", "resume", str(cut), "--quiet"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr
    assert main_run(*args, str(full)) == 0
    a, b = _tensors(full), _tensors(cut)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["stage"] == "biggan"]
    assert steps == [4, 8, 12, 16]  # each step logged once, none lost to the interruption
    assert (cut / "samples.png").is_file()
    exported = tmp_path / "exported"
    assert main_run("export", str(cut), "--format", "dir", "--out", str(exported), "--verify") == 0
    from ptl_generators.biggan_generator import build

    assert build("cpu", weights=str(exported)).class_names == ("T-shirt/top", "Trouser", "Pullover")


def main_run(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_ddpm_run_writes_a_loadable_generator_and_exports_a_diffusers_directory(tmp_path):
    recipe = _recipe(
        tmp_path,
        """
extends = "ddpm-fashion04"
[data]
dataset = "fashion-pack"
classes = [1, 3]
[train]
steps = 3
batch_size = 8
threads = 1
[ddpm]
block_out_channels = [8, 16]
norm_num_groups = 4
sample_steps = 2
[eval]
classifier = "none"
""",
    )
    run = tmp_path / "run"
    assert (
        main_run(
            "train-source", "generator", "--kind", "ddpm", "--recipe", recipe, "--quiet", "--out", str(run)
        )
        == 0
    )
    from ptl_generators.diffusion import build

    gen = build("cpu", weights=str(run / "model.safetensors"), steps=2)
    assert (gen.num_classes, gen.channels, gen.image_size) == (2, 1, 28)
    assert gen.class_names == ("Trouser", "Dress")
    out = tmp_path / "exported"
    assert main_run("export", str(run), "--format", "dir", "--out", str(out), "--verify") == 0
    assert (out / "unet" / "config.json").is_file() and (out / "ptl.json").is_file()
    assert build("cpu", weights=str(out), steps=2).num_classes == 2


def test_classifier_run_measures_test_accuracy_and_loads_as_checkpoint_classifier(tmp_path):
    run = tmp_path / "run"
    code = main_run(
        "train-source", "classifier", "--dataset", "fashion-pack", "--classes", "0,1", "--steps", "6",
        "--set", "classifier.width=0.125", "--set", "train.batch_size=16", "--quiet", "--out", str(run),
    )  # fmt: skip
    assert code == 0
    info = json.loads((run / "run.json").read_text())
    assert 0.0 <= info["metrics"]["test_acc"] <= 1.0 and info["metrics"]["test_images"] == 200
    from ptl_cli.testing import check_classifier

    clf = check_classifier("checkpoint", {"path": str(run / "model.safetensors")}, channels=1)
    assert clf.class_names == ("T-shirt/top", "Trouser")


def test_dry_run_loads_nothing_and_bad_kind_is_refused(capsys):
    assert main_run("train-source", "generator", "--kind", "ddpm", "--dry-run") == 0
    assert "ddpm-fashion04" in capsys.readouterr().out
    assert main_run("train-source", "generator", "--kind", "vae") == 2
