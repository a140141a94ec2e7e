"""Tiny real transfer runs: every stage end to end, exact resume, the CLI, export, recipes."""

from __future__ import annotations

import json

import pytest
import torch

from ptl_cli import recipes
from ptl_cli.testing import run_ptl

ALL_STAGES = ["scratch", "kd", "pp", "pssl", "pp+pssl"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tx):
    out = tmp_path_factory.mktemp("whole")
    metrics = tx.run_transfer(tx.tiny_recipe(out / "pools"), out / "run")
    return out / "run", metrics


def test_a_run_reports_every_stage_and_writes_its_outputs(uninterrupted, tx):
    run_dir, metrics = uninterrupted
    for stage in ("scratch", "kd", "pp", "pssl", "pp_pssl"):
        assert 0.0 <= metrics[f"{stage}_test_acc"] <= 1.0
    assert metrics["test_acc"] == metrics["pp_pssl_test_acc"] and metrics["final_stage"] == "pp+pssl"
    k_t = len(tx.quickstart_classes())
    assert metrics["labeled"] == 4 * k_t  # the tiny recipe's 4 labels per class
    assert 1 / k_t <= metrics["pp_pssl_pseudo_label_max_share"] <= 1.0  # at least 1/K_t of the pool
    assert {r["stage"] for r in tx.records(run_dir)} >= {
        "scratch",
        "kd",
        "pp-pool",
        "pp-pretrain",
        "pcs-pool",
    }
    assert (run_dir / "model.pt").is_file()
    assert sorted(p.name for p in (run_dir / "stages").iterdir()) == [
        "kd.pt", "pp-pretrain.pt", "pp.pt", "pp_pssl.pt", "pssl.pt", "scratch.pt",
    ]  # fmt: skip
    saved = torch.load(run_dir / "model.pt", weights_only=True)
    assert saved["stage"] == "pp+pssl" and saved["num_classes"] == k_t


def test_the_report_breaks_the_run_time_down_by_phase(uninterrupted):
    """The results table (``report.md``, ``ptl runs show``) has a row per phase in execution order
    (the pools and PP pre-training the stages share included), each with its seconds, and their total."""
    from ptl_cli.runs import Run
    from ptl_transfer import stages
    from ptl_transfer.workflow import TransferWorkflow

    run_dir, metrics = uninterrupted
    header, rows = TransferWorkflow().results_table(Run(run_dir))
    assert [r[0] for r in rows] == [*stages.PHASES, "total"]
    assert rows[-1][1] == "all phases"  # one process: the seconds are wall time, one after another
    seconds = [r[header.index("seconds")] for r in rows]
    assert all(s > 0 for s in seconds[:-1]) and seconds[-1] == pytest.approx(sum(seconds[:-1]), abs=1e-2)
    shared = {r[0]: r for r in rows if r[0] in ("pp-pool", "pp-pretrain", "pcs-pool")}
    assert all(r[2] == "" for r in shared.values())
    assert metrics["pp_pretrain_seconds"] == shared["pp-pretrain"][4]
    accuracy = {r[0]: r[2] for r in rows if r[0] in stages.STAGES}
    assert accuracy == {s: metrics[stages.metric_key(s)] for s in stages.STAGES}


def test_pp_init_is_the_pretrained_body(uninterrupted):
    """pp and pp+pssl start from the PP weights: before any step, their body equals PP's."""
    run_dir, _ = uninterrupted
    pretrained = torch.load(run_dir / "stages" / "pp-pretrain.pt", weights_only=True)
    finetuned = torch.load(run_dir / "stages" / "pp.pt", weights_only=True)
    scratch = torch.load(run_dir / "stages" / "scratch.pt", weights_only=True)
    body = [k for k in pretrained if k in finetuned and pretrained[k].shape == finetuned[k].shape]
    near_pp = sum((finetuned[k] - pretrained[k]).abs().sum() for k in body)
    near_scratch = sum((finetuned[k] - scratch[k]).abs().sum() for k in body)
    assert near_pp < near_scratch


@pytest.mark.parametrize("stops", [[13, 4, 13, 7]])
def test_resume_after_interruptions_equals_the_uninterrupted_run(uninterrupted, tmp_path, stops, tx):
    """Stopped between PP pool shards, mid pre-training, mid P-SSL and mid PP+P-SSL (polls counted
    for the tiny recipe: 6 per training phase, 2 per pool), resumed each time: the same run."""
    whole_dir, whole = uninterrupted
    data = tx.tiny_recipe(tmp_path / "pools")
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=stops[0]) is None
    _runs_show_names_where_resume_continues(out)
    for polls in stops[1:]:
        assert tx.run_transfer(data, out, stop_after=polls, resuming=True) is None
        _runs_show_names_where_resume_continues(out)
    resumed = tx.run_transfer(data, out, resuming=True)
    assert tx.without_seconds(resumed) == tx.without_seconds(whole)
    assert tx.records(out) == tx.records(whole_dir)
    a = torch.load(whole_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def _runs_show_names_where_resume_continues(out):
    """What ``ptl runs show`` says resume will do is what the newest checkpoint holds."""
    from ptl_cli.engine.checkpoint import CheckpointStore
    from ptl_cli.runs import Run
    from ptl_transfer.workflow import TransferWorkflow

    newest = CheckpointStore(out / "checkpoints").paths()[-1]
    saved = torch.load(newest, weights_only=False)
    said = TransferWorkflow().resume_point(Run(out))
    if saved["phase"] is not None and saved["state"]["step"] > 0:
        assert said == f"{saved['phase']} step {saved['state']['step']} ({newest.name})"
    else:  # between phases: one not yet done
        assert said.startswith("the start of ") and said.split()[3] not in saved["done"], said


def test_a_stage_alone_gives_the_same_result_as_in_the_full_run(uninterrupted, tmp_path, tx):
    _, whole = uninterrupted
    alone = tx.run_transfer(tx.tiny_recipe(tmp_path / "pools", stages=["pssl"]), tmp_path / "run")
    assert alone["pssl_test_acc"] == whole["pssl_test_acc"] and alone["test_acc"] == whole["pssl_test_acc"]


def _cli_args(pools):
    flat = {
        "model.arch": "conv2", "model.width": 0.25, "target.labels_per_class": 4, "pool.dir": f'"{pools}"',
        "pool.shard_size": 32, "pp.samples": 64, "pp.train.steps": 4, "pcs.per_image": 3, "ssl.mu": 2,
        "train.steps": 4, "train.batch_size": 8,
    }  # fmt: skip
    return [item for key, value in flat.items() for item in ("--set", f"{key}={value}")]


def test_cli_runs_shows_and_exports(tmp_path):
    out = tmp_path / "run"
    args = ["transfer", "--generator", "biggan", "--ssl", "fixmatch", "--stages", "scratch,pssl"]
    result = run_ptl(*args, *_cli_args(tmp_path / "pools"), "--device", "cpu", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["kind"] == "transfer"
    assert set(summary["metrics"]) >= {"test_acc", "scratch_test_acc", "pssl_test_acc"}
    shown = run_ptl("runs", "show", str(out))
    assert shown.returncode == 0 and "scratch" in shown.stdout and "pssl" in shown.stdout
    for fmt in ("pt", "safetensors"):
        exported = run_ptl("export", str(out), "--format", fmt, "--verify")
        assert exported.returncode == 0, exported.stderr
        assert "verified" in exported.stdout and (out / f"model.{fmt}").is_file()
    assert "stage pssl: the final one; --stage picks another" in exported.stdout
    # --stage: another stage's weights, verified the same way
    exported = run_ptl("export", str(out), "--stage", "scratch", "-o", str(tmp_path / "s.pt"), "--verify")
    assert exported.returncode == 0 and "stage scratch)" in exported.stdout and "verified" in exported.stdout
    scratch = torch.load(tmp_path / "s.pt", weights_only=True)
    final = torch.load(out / "export.pt", weights_only=True)
    assert scratch["stage"] == "scratch" and final["stage"] == "pssl"
    assert any(not torch.equal(scratch["state_dict"][k], v) for k, v in final["state_dict"].items())
    refused = run_ptl("export", str(out), "--stage", "kd", "-o", str(tmp_path / "k.pt"))
    assert refused.returncode == 2 and "--stage 'kd': this run trained scratch, pssl" in refused.stderr
    assert "made by" in shown.stdout and "SSL algorithm fixmatch: plugin ssl from ptl" in shown.stdout


def test_bad_input_is_a_one_line_error(tmp_path):
    result = run_ptl("transfer", "--stages", "scratch,ppssl", "--dry-run")
    assert result.returncode == 2 and "unknown stage 'ppssl'" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_ptl("transfer", "--ssl", "fixmatc", "--dry-run")
    assert result.returncode == 2 and "did you mean 'fixmatch'" in result.stderr


def test_every_transfer_recipe_plans_without_loading_weights():
    from ptl_cli import plugins

    spec = plugins.get("workflows", "transfer")
    names = [n for n, path in recipes.available().items() if "transfer" in path.parts]
    assert "transfer-quickstart" in names and len(names) >= 14  # quickstart, base, 6 targets × 2 nets
    for name in names:
        resolved = recipes.resolve(name, spec.params)
        plan = dict(spec.load_factory()().plan(resolved.model))
        assert "source generator" in plan and "target architecture" in plan, name
    paper = dict(spec.load_factory()().plan(recipes.resolve("transfer-cub-mobilenetv3", spec.params).model))
    assert "biggan-deep-256" in paper["source generator"] and "cub200" in paper["target"]
    assert "mobilenet_v3_large" in paper["target architecture"]


DRY_RUN = """
import contextlib, io, json, sys
sys.argv = ["ptl", "transfer", "--recipe", "transfer-cars-resnet18", "--dry-run", "--json"]
from ptl_cli.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
print(json.dumps({"plan": json.loads(out.getvalue())["plan"], "torch": "torch" in sys.modules}))
"""


def test_dry_run_of_a_paper_recipe_loads_nothing_not_even_torch():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", DRY_RUN], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert not answer["torch"]
    assert "torchvision:resnet50" in answer["plan"]["source classifier"]
    assert "stanford-cars" in answer["plan"]["target"]


def test_an_image_folder_target_in_rgb(tmp_path, tx):
    """``--target DIR``: decoded lazily, RGB; the grey generator's samples are matched to 3 channels."""
    from PIL import Image

    from ptl_cli import plugins

    for split in ("train", "test"):
        data = plugins.get("datasets", "fashion-pack").build(None, split, False)
        for cls in (5, 7, 9):
            folder = tmp_path / "images" / split / f"c{cls}"
            folder.mkdir(parents=True)
            for i in (data.targets == cls).nonzero().flatten()[:4].tolist():
                Image.fromarray(data.images[i, 0].numpy(), mode="L").save(folder / f"{i}.png")
    recipe = tx.tiny_recipe(tmp_path / "pools", stages=["scratch", "pssl"])
    folder = {"path": str(tmp_path / "images"), "image_size": 28}
    recipe["target"] = {"dataset": "imagefolder", "params": folder, "labels_per_class": 3}
    metrics = tx.run_transfer(recipe, tmp_path / "run")
    assert metrics["labeled"] == 9 and 0.0 <= metrics["pssl_test_acc"] <= 1.0
    pools = list((tmp_path / "pools").glob("pcs-*/shard-00000.pt"))
    assert torch.load(pools[0], weights_only=True)["images"].shape[1:] == (3, 28, 28)


def test_pp_stages_start_from_the_pretrained_body_with_a_fresh_target_head(uninterrupted, tx, generator):
    """PP trains a K_s-way head; ``pp``/``pp+pssl`` keep every body weight and replace that head."""
    from ptl_transfer import nets

    run_dir, _ = uninterrupted
    job = tx.make_job(tx.tiny_recipe(run_dir.parent / "pools"), run_dir)
    pretrained = torch.load(run_dir / "stages" / "pp-pretrain.pt", weights_only=True)
    source = job.new_model("source")
    assert nets.get_head(source).out_features == generator.num_classes
    assert source.state_dict().keys() == pretrained.keys()
    model = job.new_model("pp")
    head = nets.head_name(model)
    state = model.state_dict()
    body = [k for k in pretrained if not k.startswith(f"{head}.")]
    assert body and all(torch.equal(state[k], pretrained[k]) for k in body)
    assert not torch.equal(state[f"{head}.weight"], pretrained[f"{head}.weight"])  # swapped, not kept
    assert torch.equal(state[f"{head}.weight"], job.new_model("pp").state_dict()[f"{head}.weight"])  # seeded


def test_pools_are_keyed_by_what_generates_them_and_shared_by_the_rest(tmp_path, tx):
    def paths(**sets):
        job = tx.make_job(tx.tiny_recipe(tmp_path, **sets), tmp_path)
        return job.pool("pp")[0].path, job.pool("pcs")[0].path

    pp, pcs_ = paths()
    assert paths(seed=5) == (pp, pcs_)  # another run seed reuses both pools
    assert paths(**{"model.arch": "resnet18", "model.width": 0.125}) == (pp, pcs_)  # so does another net
    assert paths(**{"pp.train.steps": 3, "train.steps": 2}) == (pp, pcs_)  # and other schedules
    other_pp = paths(**{"pp.seed": 1})
    assert other_pp[0] != pp and other_pp[1] == pcs_
    for key, value in (("pcs.temperature", 0.5), ("pcs.top_k", 2), ("pcs.per_image", 4), ("pcs.seed", 1)):
        other = paths(**{key: value})
        assert other[0] == pp and other[1] != pcs_, key
    weights = {"source.generator.params": {"weights": "bundled", "truncation": 0.5}}
    assert all(a != b for a, b in zip(paths(**weights), (pp, pcs_), strict=True))  # generator id
    assert all(a != b for a, b in zip(paths(**{"pool.gen_batch_size": 8}), (pp, pcs_), strict=True))
    assert paths(**{"target.labels_per_class": 3})[1] != pcs_  # other target images


def test_on_the_fly_pp_writes_no_pool_and_resumes_exactly(tmp_path, tx):
    data = tx.tiny_recipe(tmp_path / "pools", stages=["pp"], **{"pp.mode": "on-the-fly"})
    whole = tx.run_transfer(data, tmp_path / "whole")
    assert not list((tmp_path / "pools").glob("pp-*"))
    assert 0.0 <= whole["pp_test_acc"] <= 1.0 and 0.0 <= whole["pp_source_train_acc"] <= 1.0
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=3) is None  # mid pre-training (one poll per step)
    resumed = tx.run_transfer(data, out, resuming=True)
    assert tx.without_seconds(resumed) == tx.without_seconds(whole)
    assert tx.records(out) == tx.records(tmp_path / "whole")


def test_a_checkpoint_of_another_layout_version_is_refused_in_one_line(tmp_path, tx):
    """Resuming from a checkpoint whose layout this ptl does not write says so and what to do;
    the same checkpoint with the current version resumes (the refusal is the version's)."""
    from ptl_transfer.running import CHECKPOINT_VERSION

    data = tx.tiny_recipe(tmp_path / "pools", stages=["scratch"])
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=3) is None  # mid scratch
    (newest,) = sorted((out / "checkpoints").glob("step-*.pt"))[-1:]
    saved = torch.load(newest, weights_only=True)
    assert saved["version"] == CHECKPOINT_VERSION and saved["phase"] == "scratch"
    torch.save({**saved, "version": CHECKPOINT_VERSION + 1}, newest)
    result = run_ptl("resume", str(out), "--quiet")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"layout version {CHECKPOINT_VERSION + 1}" in result.stderr and "start a new run" in result.stderr
    torch.save(saved, newest)
    assert 0.0 <= tx.run_transfer(data, out, resuming=True)["scratch_test_acc"] <= 1.0


def test_the_real_unlabeled_control_trains_on_the_targets_other_images(tmp_path, tx):
    """``ssl.unlabeled = "real"``: P-SSL's unlabeled batches are the target's own training images of
    its classes that are not labeled (plain SSL, the ceiling a perfect generator would give); no
    PCS pool is planned or made, the result differs from the pseudo-sample run, resume is exact."""
    from ptl_transfer import stages, target

    pools = tmp_path / "pools"
    data = tx.tiny_recipe(pools, stages=["pssl"], **{"ssl.unlabeled": "real"})
    job = tx.make_job(data, tmp_path)
    assert "pcs-pool" not in [p.name for p in stages.phases(job.recipe)]
    real = target.real_unlabeled(job.recipe, job.target)
    split = target.build_dataset(job.recipe, job.recipe.target.train_split)
    assert len(real) == len(split) - job.target.images.shape[0] > 0
    labeled = {bytes(image.numpy()) for image in job.target.images}
    assert not any(bytes(image.numpy()) in labeled for image in real.images[:200])  # none is labeled

    whole = tx.run_transfer(data, tmp_path / "whole")
    assert not list(pools.glob("pcs-*")) and "pcs_agreement" not in whole
    pseudo = tx.run_transfer(tx.tiny_recipe(pools, stages=["pssl"]), tmp_path / "pseudo")
    assert list(pools.glob("pcs-*")) and "pcs_agreement" in pseudo
    assert tx.records(tmp_path / "whole") != tx.records(tmp_path / "pseudo")  # the unlabeled set matters
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=3) is None
    resumed = tx.run_transfer(data, out, resuming=True)
    assert tx.without_seconds(resumed) == tx.without_seconds(whole)
    assert tx.records(out) == tx.records(tmp_path / "whole")
