"""The built-in loggers on a real tiny prune run, each read back with its tracker's own reader:
TensorBoard's EventAccumulator, MLflow's client on the file store, W&B's offline run file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

BASE = """
extends = "prune-quickstart"
[model]
name = "conv2"
width = 0.125
[data]
train_limit = 64
test_limit = 64
val_fraction = 0.1
[train]
epochs = 2
batch_size = 32
log_every = 1
checkpoint_every = 1
"""


def scalars_of(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``stage/key`` -> [(step, value)] straight from metrics.jsonl, the source of truth."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key in ("step", "stage", "time") or not isinstance(value, (int, float)):
                continue
            out.setdefault(f"{record['stage']}/{key}", []).append((record["step"], float(value)))
    return out


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    """One tiny run with all three loggers (1 thread, as every test here)."""
    import torch

    from ptl_cli.cli import main

    root = tmp_path_factory.mktemp("logged")
    (root / "tiny.toml").write_text(BASE)
    run = root / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(
            [
                "run",
                "--recipe",
                str(root / "tiny.toml"),
                "--log",
                "tensorboard,mlflow,wandb",
                "--out",
                str(run),
                "--quiet",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    return run


def test_tensorboard_event_files_hold_every_metric_the_recipe_and_the_report(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    expected = scalars_of(logged_run)
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, points in expected.items():
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert got == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], tag
    assert "report/curves" in events.Tags()["images"]
    recipe = events.Tensors("recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| model.width | 0.125 |" in recipe


def test_mlflow_file_store_run_has_the_metrics_params_and_report(logged_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(logged_run / "mlruns").resolve().as_uri())
    run = client.get_run((logged_run / "mlflow-run-id").read_text().strip())
    assert run.info.status == "FINISHED" and run.info.run_name == logged_run.name
    assert run.data.params["model.width"] == "0.125" and run.data.params["kind"] == "prune"
    for tag, points in scalars_of(logged_run).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag))
        assert history == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], tag
    assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == ["report/curves.png"]


def wandb_records(path: Path):
    """The records of a W&B run file (LevelDB-log framing: 7-byte header, 32 KiB blocks, each
    record a 7-byte crc/length/type header), parsed with wandb's own protobuf schema."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_records_the_metrics_and_the_recipe(logged_run):
    (run_file,) = (logged_run / "wandb").glob("offline-run-*/run-*.wandb")
    history, config = [], {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(
                {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            )
        elif kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
    for tag, points in scalars_of(logged_run).items():
        got = [(h["step"], h[tag]) for h in history if tag in h]
        assert got == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], tag
    assert config["model.width"] == 0.125 and config["pruner.name"] == "iterand"
    images = [h for h in history if h.get("report/curves/_type") == "image-file"]
    assert len(images) == 1
    assert (run_file.parent / "files" / images[0]["report/curves/path"]).is_file()


def test_unknown_or_uninstalled_logger_is_a_one_line_error_at_dry_run(cli, tmp_path):
    (tmp_path / "tiny.toml").write_text(BASE)
    code, _, err = cli("prune", "--recipe", tmp_path / "tiny.toml", "--log", "tensorbord", "--dry-run")
    assert code == 2 and "unknown logger 'tensorbord'" in err and "tensorboard" in err
    assert len(err.strip().splitlines()) == 1


def test_a_resumed_run_continues_the_same_tracked_runs(cli, one_thread, tmp_path):
    """Interrupted after 2 steps and resumed: one MLflow run with every step once, and TensorBoard
    reading both sessions' event files as one run, equal to metrics.jsonl."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "tiny.toml").write_text(BASE)
    run = tmp_path / "run"
    args = [
        "prune",
        "--recipe",
        tmp_path / "tiny.toml",
        "--log",
        "mlflow,tensorboard",
        "--out",
        run,
        "--quiet",
    ]
    code, _, err = cli(*args, "--set", "train.stop_after_steps=2")
    assert code == 130, err
    code, _, err = cli("resume", run, "--quiet")
    assert code == 0, err
    expected = scalars_of(run)
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "ptl"]
    (tracked,) = client.search_runs([experiment.experiment_id])
    assert tracked.info.run_id == (run / "mlflow-run-id").read_text().strip()
    assert tracked.info.status == "FINISHED"
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    for tag, points in expected.items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(tracked.info.run_id, tag))
        assert history == [(s, pytest.approx(v, rel=1e-6)) for s, v in points], tag
        assert [(e.step, e.value) for e in events.Scalars(tag)] == [
            (s, pytest.approx(v, rel=1e-6)) for s, v in points
        ]
