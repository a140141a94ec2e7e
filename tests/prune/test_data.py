"""``data.train_limit``: a seeded training subset drawn after the validation hold-out.

The Fashion-MNIST benchmark trains on a subset to fit a CPU budget; these tests pin what that
subset is, on the bundled pack's real images, and that a run records and checks it.
"""

from __future__ import annotations

import json

import pytest

from ptl_prune import data
from ptl_prune.recipe import DataSection


def keys(dataset) -> list[bytes]:
    """One key per image (the pack holds no duplicate images, checked below)."""
    return [bytes(image.numpy()) for image in dataset.images]


def load(**section) -> data.PruneData:
    return data.load(DataSection(dataset="fashion-pack", **section))


def test_train_limit_is_a_seeded_subset_of_the_train_side_of_the_holdout():
    full = load()
    limited = load(train_limit=300)
    assert len(set(keys(full.train))) == len(full.train) == 4500  # keys identify images
    assert len(limited.train) == 300
    assert set(keys(limited.train)) <= set(keys(full.train))  # never a validation image
    assert keys(limited.val) == keys(full.val)  # the hold-out does not move
    assert keys(limited.test) == keys(full.test)
    # labels travel with their images
    label = dict(zip(keys(full.train), full.train.targets.tolist(), strict=True))
    assert [label[k] for k in keys(limited.train)] == limited.train.targets.tolist()
    assert keys(limited.train) != keys(full.train)[:300]  # a seeded draw, not the first rows


def test_train_limit_depends_on_split_seed_only():
    a, b = load(train_limit=300), load(train_limit=300)
    assert keys(a.train) == keys(b.train)
    other = load(train_limit=300, split_seed=1)
    assert set(keys(other.train)) != set(keys(a.train))
    assert set(keys(other.val)) != set(keys(a.val))  # split_seed also moves the hold-out


def test_train_limit_at_or_above_the_train_split_keeps_everything():
    assert keys(load(train_limit=4500).train) == keys(load().train)
    assert keys(load(train_limit=10**6).train) == keys(load().train)


@pytest.mark.parametrize("value", ["-1", "many"])
def test_bad_train_limit_is_a_one_line_dry_run_error(cli, value):
    code, out, err = cli("prune", "--set", f"data.train_limit={value}", "--dry-run")
    assert code == 2 and "train_limit" in err and len(err.strip().splitlines()) == 1, err


def test_dry_run_plan_and_run_record_show_the_limit(cli, show, tmp_path):
    code, out, err = cli("prune", "--set", "data.train_limit=96", "--dry-run", "--json")
    assert code == 0, err
    assert "train ≤ 96" in json.loads(out)["plan"]["data"]
    run = tmp_path / "run"
    args = ["--model", "conv2", "--width", "0.125", "--epochs", "1", "--batch-size", "32"]
    args += ["--set", "data.train_limit=96", "--set", "data.test_limit=64", "--quiet", "--out", run]
    code, _, err = cli("prune", "--method", "edge-popup", *args)
    assert code == 0, err
    summary = show(run)
    assert summary["recipe"]["data"]["train_limit"] == 96
    assert summary["metrics"]["steps"] == 3  # 96 images in batches of 32: the limit is what trains
