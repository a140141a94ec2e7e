"""``ptl prune`` end to end: tiny real runs, bad input, exact resume after an interruption, exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ptl_cli import plugins
from ptl_cli.cli import main
from ptl_prune import inits
from ptl_prune.export import bit_equal

# Conv-2 at width 1/4 on 256 real images: 8 steps of 32 per epoch, re-draws every 3 steps.
TINY = [
    "--model", "conv2", "--width", "0.25", "--epochs", "2", "--batch-size", "32",
    "--set", "data.train_limit=256", "--set", "data.test_limit=200", "--set", "train.checkpoint_every=4",
    "--quiet",
]  # fmt: skip
ITERAND = ["--method", "iterand", "--rerand-freq", "3", *TINY]


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "final.pt", weights_only=True)["model"]


def records(run: Path) -> list[dict]:
    return [
        {k: v for k, v in json.loads(line).items() if k != "time"} for line in (run / "metrics.jsonl").open()
    ]


@pytest.fixture(scope="module")
def iterand_run(tmp_path_factory) -> Path:
    """An uninterrupted tiny IteRand run (shared by the resume and export tests)."""
    run = tmp_path_factory.mktemp("runs") / "iterand"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the autouse fixture does for each test
    try:
        main(["prune", *ITERAND, "--out", str(run)])
    finally:
        torch.set_num_threads(threads)
    return run


def test_iterand_run_reports_accuracy_and_exact_sparsity(cli, show, iterand_run):
    summary = show(iterand_run)
    assert summary["kind"] == "prune" and summary["status"] == "completed"
    metrics = summary["metrics"]
    assert 0.0 <= metrics["test_acc"] <= 1.0
    assert metrics["sparsity"] == pytest.approx(0.5, abs=1e-6)  # every layer pruned at exactly p
    assert metrics["params_kept"] == metrics["params_total"] - round(metrics["params_total"] * 0.5)
    assert summary["recipe"]["pruner"]["name"] == "iterand"
    stages = {r["stage"] for r in records(iterand_run)}
    assert stages == {"train", "val", "test"}
    assert (iterand_run / "report.md").is_file()


def test_iterand_weights_are_each_the_initial_draw_or_one_of_its_redraws(iterand_run):
    """Through the whole loop (16 steps, re-draws at 3, 6, 9, 12, 15), every weight of the final
    network is bit-identical to the draw its ``sources`` entry names: kept weights were never
    touched except by re-draws that happened while they were pruned."""
    final = torch.load(iterand_run / "final.pt", weights_only=True)
    events, seed = final["pruner"]["events"], final["seed"]
    assert events == [3, 6, 9, 12, 15]
    state = final["model"]
    originals = [k for k in state if k.endswith("parametrizations.weight.original")]  # in layer order
    assert len(originals) == 5
    redrawn = 0
    for index, key in enumerate(originals):  # registration order = layer index (features.*, classifier.*)
        weight, sources = state[key], state[key.replace("original", "0.sources")]
        expected = inits.initial_weight("kaiming_uniform", weight.shape, seed, index)
        for event, step in enumerate(events, start=1):
            fresh = inits.draw("kaiming_uniform", weight.shape, inits.redraw_generator(seed, step, index))
            expected = torch.where(sources == event, fresh, expected)
        assert bit_equal(weight, expected), key
        redrawn += int((sources > 0).sum())
    total = sum(state[k].numel() for k in originals)
    assert 0.02 * total < redrawn < 0.5 * total  # some re-drawn, never a kept-only pattern


@pytest.mark.parametrize("method", ["edge-popup", "sgd"])
def test_other_methods_run(cli, show, tmp_path, method):
    code, out, err = cli("prune", "--method", method, *TINY, "--out", tmp_path / "run")
    assert code == 0, err
    metrics = show(tmp_path / "run")["metrics"]
    assert metrics["sparsity"] == (0.0 if method == "sgd" else pytest.approx(0.5, abs=1e-6))
    assert "test accuracy" in out
    state = final_state(tmp_path / "run")
    if method == "edge-popup":  # 16 real steps later, every weight is still its seeded initial draw
        originals = [k for k in state if k.endswith("parametrizations.weight.original")]
        assert len(originals) == 5
        for index, key in enumerate(originals):
            initial = inits.initial_weight("kaiming_uniform", state[key].shape, 0, index)
            assert bit_equal(state[key], initial), key
        assert all(not v.any() for k, v in state.items() if k.endswith(".bias"))  # zero and untrained


def test_rerand_freq_per_epoch(cli, show, tmp_path):
    """``rerand_freq_unit = epochs``: K re-draws per epoch of 8 steps, counted over the whole run."""
    args = [*ITERAND, "--rerand-freq", "2", "--set", "pruner.params.rerand_freq_unit=epochs"]
    code, _, err = cli("prune", *args, "--out", tmp_path / "run")
    assert code == 0, err
    assert torch.load(tmp_path / "run" / "final.pt", weights_only=True)["pruner"]["events"] == [4, 8, 12, 16]


def test_resume_after_interruption_is_bit_identical(cli, show, tmp_path, iterand_run):
    """Stopped at step 5 (after the re-draw at 3, mid-epoch), resumed: same weights, same log."""
    run = tmp_path / "stopped"
    code, _, _ = cli("prune", *ITERAND, "--out", run, "--set", "train.stop_after_steps=5")
    assert code == 130
    assert show(run)["status"] == "interrupted"
    saved = torch.load(sorted((run / "checkpoints").iterdir())[-1], weights_only=True)
    assert saved["step"] == 5 and saved["pruner"]["events"] == [3]
    code, _, err = cli("resume", run, "--quiet")
    assert code == 0, err
    assert show(run)["metrics"]["test_acc"] == show(iterand_run)["metrics"]["test_acc"]
    a, b = final_state(iterand_run), final_state(run)
    assert a.keys() == b.keys() and all(bit_equal(a[k], b[k]) for k in a)
    assert records(run) == records(iterand_run)


def test_real_sigint_then_resume_is_bit_identical(cli, show, tmp_path):
    args = ["--method", "iterand", "--rerand-freq", "3", *TINY, "--epochs", "8"]
    args += [
        "--set",
        "data.train_limit=64",
        "--set",
        "data.val_fraction=0.01",
        "--set",
        "train.checkpoint_every=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "signalled"
    proc = subprocess.Popen([sys.executable, "-m", "ptl_cli", "prune", *args, "--out", str(run)], env=env)
    while proc.poll() is None and not list((run / "checkpoints").glob("step-*.pt")):
        time.sleep(0.02)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be interrupted")
    proc.send_signal(signal.SIGINT)
    assert proc.wait() == 130
    assert show(run)["status"] == "interrupted"
    assert cli("resume", run, "--quiet")[0] == 0
    reference = tmp_path / "reference"
    assert cli("prune", *args, "--out", reference)[0] == 0
    a, b = final_state(reference), final_state(run)
    assert all(bit_equal(a[k], b[k]) for k in a)
    assert records(run) == records(reference)


def test_exports_load_with_plain_torch_and_verify(cli, show, tmp_path, iterand_run):
    code, out, err = cli("export", iterand_run, "--format", "pt", "--out", tmp_path / "m.pt", "--verify")
    assert code == 0, err
    assert "verified" in out
    blob = torch.load(tmp_path / "m.pt", weights_only=True)  # plain torch, no ptl classes inside
    arch = blob["arch"]
    model = plugins.get("models", arch["model"]).build(
        arch["num_classes"], arch["in_channels"], arch["image_size"], arch["width"], params=arch["params"]
    )
    model.load_state_dict(blob["state_dict"], strict=True)
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert all(int((w == 0).sum()) == round(w.numel() * 0.5) for w in weights)

    code, out, err = cli(
        "export", iterand_run, "--format", "safetensors", "--out", tmp_path / "m.st", "--verify"
    )
    assert code == 0 and "verified" in out, err

    code, out, err = cli("export", iterand_run, "--format", "ticket", "--out", tmp_path / "t.st", "--verify")
    assert code == 0, err
    assert "ticket" in out and "smaller" in out and "verified" in out
    assert (tmp_path / "t.st").stat().st_size * 4 < (tmp_path / "m.st").stat().st_size


def test_dry_run_shows_the_plan(cli, show):
    code, out, _ = cli("prune", "--method", "iterand", "--dry-run", "--json")
    assert code == 0
    plan = json.loads(out)
    assert (
        plan["recipe"]["name"] == "iterand-quickstart" and plan["recipe"]["data"]["dataset"] == "fashion-pack"
    )
    code, out, _ = cli("prune", "--recipe", "iterand-conv6-cifar10", "--dry-run")
    assert code == 0 and "rerand_freq=300" in out and "cifar10" in out
    code, out, _ = cli("prune", "--recipe", "iterand-resnet50-imagenet", "--dry-run", "--json")
    plan = dict(json.loads(out)["plan"]) if code == 0 else {}
    assert plan.get("lr schedule") == "5 warm-up + 95 cosine + 5 at 1e-05 (per epoch)", out


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "iterandd"], "did you mean 'iterand'"),
        (["--sparsity", "1.5"], "sparsity"),
        (["--method", "sgd", "--sparsity", "0.5"], "unknown key `pruner.params.sparsity`"),
        (["--set", "train.epochz=3"], "unknown key `train.epochz`"),
        (["--model", "conv66"], "unknown model 'conv66'"),
        (["--weight-init", "xavier"], "weight_init"),
        (["--recipe", "no-such-recipe"], "unknown recipe"),
    ],
)
def test_bad_input_is_one_line_with_exit_2(cli, show, args, expected):
    code, _, err = cli("prune", *args, "--dry-run")
    assert code == 2
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--method", "edge-popup", "--sparsity", "0"], "leaves nothing to train"),
        (["--set", 'pruner.params.layer_sparsity={"clasifier.*" = 0.9}'], "matches no Conv/Linear layer"),
    ],
)
def test_settings_that_prune_nothing_or_nothing_named_fail_clearly(cli, show, tmp_path, args, expected):
    code, _, err = cli("prune", *TINY, *args, "--out", tmp_path / "run")
    assert code == 2, err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_data_and_impossible_exports_are_clear(cli, show, tmp_path, iterand_run):
    run = tmp_path / "nodata"
    code, _, err = cli(
        "prune", "--dataset", "cifar10", "--data-dir", tmp_path / "empty", "--out", run, "--quiet"
    )
    assert code == 2 and "not found" in err and err.count("\n") == 1
    assert not run.exists()  # bad input before the first checkpoint leaves no run behind
    stopped = tmp_path / "stopped"
    code, _, _ = cli("prune", *ITERAND, "--out", stopped, "--set", "train.stop_after_steps=1")
    assert code == 130 and show(stopped)["status"] == "interrupted"
    code, _, err = cli("export", stopped, "--format", "pt")
    assert code == 2 and "no final model" in err
    code, _, err = cli("export", iterand_run, "--format", "onnx")
    assert code == 2 and "pt, safetensors, ticket" in err
