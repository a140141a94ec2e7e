"""A whole ``ptl transfer`` run whose sources need no source data: tiny Stable Diffusion + tiny CLIP.

Both read the same class names and templates; every stage (scratch, KD, PP, P-SSL, PP + P-SSL)
runs on the bundled Fashion-MNIST pack as the target, at tiny sizes, through the CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tomli_w

from ptl_cli import recipes

from .conftest import CLASSES


def test_a_transfer_run_with_stable_diffusion_and_clip_completes(sd, clip_dir, tmp_path):
    data, _ = recipes.load_raw("transfer-quickstart")
    prompted = {"classes": CLASSES, "templates": ["a photo of a {name}.", "a drawing of a {name}."]}
    data["source"] = {
        "generator": {
            "name": "stable-diffusion",
            "params": {"weights": str(sd[1]), "steps": 2, "guidance_scale": 2.0, **prompted},
        },
        "classifier": {"name": "clip", "params": {"weights": str(clip_dir), **prompted}},
    }
    small = {
        "model.arch": "conv2",
        "model.width": 0.25,
        "target.labels_per_class": 2,
        "pool.dir": str(tmp_path / "pools"),
        "pool.shard_size": 16,
        "pool.gen_batch_size": 16,
        "pp.samples": 32,
        "pp.train.steps": 3,
        "pp.train.batch_size": 8,
        "pp.train.checkpoint_every": 3,
        "pcs.per_image": 2,
        "ssl.mu": 2,
        "train.steps": 3,
        "train.batch_size": 8,
        "train.checkpoint_every": 3,
        "compute.device": "cpu",
    }
    for key, value in small.items():
        recipes.set_dotted(data, key, value, "test")
    recipe = tmp_path / "sd-clip.toml"
    recipe.write_text(tomli_w.dumps(data))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PTL_OFFLINE": "1"}
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "ptl_cli", "transfer", "--recipe", str(recipe), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    for stage in ("scratch", "kd", "pp", "pssl", "pp_pssl"):
        assert 0.0 <= metrics[f"{stage}_test_acc"] <= 1.0, metrics
    assert metrics["final_stage"] == "pp+pssl"
    pools = sorted(p.name for p in (tmp_path / "pools").iterdir())
    assert any(p.startswith("pp-stable-diffusion") for p in pools), pools
    assert any(p.startswith("pcs-stable-diffusion") for p in pools), pools


DRY_RUN = """
import contextlib, io, json, sys
sys.argv = ["ptl", "transfer", "--recipe", sys.argv[1], "--dry-run", "--json"]
from ptl_cli.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
heavy = [m for m in ("torch", "transformers", "diffusers", "timm") if m in sys.modules]
print(json.dumps({"plan": json.loads(out.getvalue())["plan"], "heavy": heavy}))
"""


@pytest.mark.parametrize(
    ("recipe", "classifier"),
    [("transfer-cars-sd-clip", "clip"), ("transfer-pets-sdturbo-resnet50", "torchvision:resnet50")],
)
def test_the_paper_scale_text_to_image_recipes_plan_offline_without_heavy_imports(
    recipe, classifier, tmp_path
):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PTL_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", DRY_RUN, recipe], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["heavy"] == []
    assert answer["plan"]["source generator"].startswith("stable-diffusion")
    assert answer["plan"]["source classifier"].startswith(classifier)


def test_text_sources_that_name_their_classes_differently_are_refused(sd, clip_dir):
    from ptl_cli import plugins
    from ptl_cli.errors import UserError
    from ptl_transfer.sources import Sources

    data, _ = recipes.load_raw("transfer-quickstart")
    data["source"] = {
        "generator": {"name": "stable-diffusion", "params": {"weights": str(sd[1]), "classes": CLASSES}},
        "classifier": {"name": "clip", "params": {"weights": str(clip_dir), "classes": CLASSES[::-1]}},
    }
    recipe = recipes.validate(data, plugins.get("workflows", "transfer").params, "test").model
    sources = Sources(recipe, "cpu")
    assert sources.generator.class_names == tuple(CLASSES)
    with pytest.raises(UserError, match="name class 0 differently \\('cat' vs 'red car'\\)"):
        sources.classifier  # noqa: B018 - building it is the check


def test_different_classes_settings_are_refused_at_dry_run(cli):
    other = 'source.classifier.params.classes=["a", "b"]'
    code, _, err = cli("transfer", "--recipe", "transfer-cars-sd-clip", "--set", other, "--dry-run")
    assert code == 2 and "the generator's classes 'imagenet' and the classifier's ['a', 'b'] differ" in err
    assert len(err.strip().splitlines()) == 1
