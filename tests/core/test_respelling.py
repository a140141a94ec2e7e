"""Every component in a recipe is written ``name`` + ``params``; the spellings before it
(``[pruner] method`` + flat parameters, transfer's ``[model] arch``) resolve to the same recipe,
layer by layer, with one deprecation line on stderr."""

from __future__ import annotations

import copy
import json

import pytest
import tomli_w

from ptl_cli import plugins, recipes
from ptl_cli.errors import UserError
from ptl_cli.testing import run_ptl

PRUNE_NEW = {
    "kind": "prune",
    "extends": "prune-quickstart",
    "pruner": {
        "name": "iterand",
        "params": {"sparsity": 0.6, "rerand_freq": 7, "layer_sparsity": {"f*": 0.3}},
    },
}
PRUNE_OLD = {
    "kind": "prune",
    "extends": "prune-quickstart",
    "pruner": {"method": "iterand", "sparsity": 0.6, "rerand_freq": 7, "layer_sparsity": {"f*": 0.3}},
}


def write(directory, stem, data):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def resolve(path, sets=()):
    data, _ = recipes.load_raw(str(path))
    schema = plugins.get("workflows", data["kind"]).params
    return recipes.resolve(str(path), schema, {}, list(sets), data["kind"]).data


def old_spelling(raw: dict) -> dict:
    """A recipe layer as it was written before ``name`` + ``params``."""
    raw = copy.deepcopy(raw)
    pruner = raw.get("pruner")
    if isinstance(pruner, dict):
        raw["pruner"] = {
            **({"method": pruner["name"]} if "name" in pruner else {}),
            **pruner.get("params", {}),
        }
    if raw.get("kind") == "transfer" and "name" in raw.get("model", {}):
        raw["model"] = {"arch": raw["model"].pop("name"), **raw["model"]}
    return raw


def test_old_and_new_pruner_spellings_resolve_to_the_same_recipe(tmp_path):
    new = resolve(write(tmp_path / "new", "mine", PRUNE_NEW))
    old = resolve(write(tmp_path / "old", "mine", PRUNE_OLD))
    assert old == new
    assert new["pruner"]["name"] == "iterand" and new["pruner"]["params"]["sparsity"] == 0.6
    assert new["pruner"]["params"]["layer_sparsity"] == {"f*": 0.3}
    other = copy.deepcopy(PRUNE_OLD)
    other["pruner"]["sparsity"] = 0.4  # the old spelling's values are read, not defaults
    assert resolve(write(tmp_path / "other", "mine", other))["pruner"]["params"]["sparsity"] == 0.4


def _renamed_shipped_recipes() -> list[str]:
    """The shipped prune and transfer recipes that have a key the old spelling names otherwise."""
    names = []
    for name, path in sorted(recipes.available().items()):
        raw = recipes.load_raw(name)[0] if "/recipes/" in str(path) else {}
        if raw.get("kind") in ("prune", "transfer") and old_spelling(_one_layer(raw)) != _one_layer(raw):
            names.append(name)
    return names


def _one_layer(raw: dict) -> dict:
    return {k: v for k, v in raw.items() if k not in ("extends", "name")}


@pytest.mark.parametrize("name", _renamed_shipped_recipes())
def test_every_shipped_recipe_reads_the_same_in_the_old_spelling(tmp_path, name):
    """Each shipped recipe, written back in the old spelling (every layer of its ``extends`` chain
    merged into one file), resolves to exactly what the shipped one resolves to."""
    raw, path = recipes.load_raw(name)
    old = old_spelling(_one_layer(raw))
    shipped = {**resolve(path), "extends": None}  # the old file is the whole chain in one layer
    assert resolve(write(tmp_path, path.stem, old)) == shipped


def test_each_layer_is_respelled_before_layers_merge(tmp_path, monkeypatch):
    """A later layer wins whichever spelling either uses; one layer with both is an error."""
    monkeypatch.setenv("PTL_RECIPE_PATH", str(tmp_path))  # `extends = "old"` below
    old = write(tmp_path, "old", PRUNE_OLD)
    new = write(tmp_path, "new", PRUNE_NEW)
    assert resolve(old, ["pruner.params.sparsity=0.7"])["pruner"]["params"]["sparsity"] == 0.7
    assert resolve(new, ["pruner.sparsity=0.7"])["pruner"]["params"]["sparsity"] == 0.7
    # edge-popup has no rerand_freq: both spellings are refused with the same message
    with pytest.raises(UserError) as old_error:
        resolve(new, ["pruner.method=edge-popup"])
    with pytest.raises(UserError) as new_error:
        resolve(new, ["pruner.name=edge-popup"])
    assert str(old_error.value).replace("pruner.method", "pruner.name") == str(new_error.value)
    child = write(
        tmp_path, "child", {"kind": "prune", "extends": "old", "pruner": {"params": {"sparsity": 0.2}}}
    )
    assert resolve(child)["pruner"]["params"]["sparsity"] == 0.2  # new child over an old base
    both = write(
        tmp_path,
        "both",
        {**PRUNE_NEW, "pruner": {"name": "iterand", "sparsity": 0.5, "params": {"sparsity": 0.6}}},
    )
    with pytest.raises(UserError, match=r"`pruner.sparsity` and `pruner.params.sparsity` are both set"):
        resolve(both)


def test_a_run_directory_recipe_in_the_old_spelling_still_validates():
    """``ptl resume`` and ``ptl runs show`` validate the recipe a run wrote, without load_raw."""
    schema = plugins.get("workflows", "prune").params
    new = recipes.validate(resolve_raw("iterand-quickstart"), schema, "run").data
    old = recipes.validate(old_spelling(resolve_raw("iterand-quickstart")), schema, "run").data
    assert old == new


def resolve_raw(name):
    return recipes.resolve(name, plugins.get("workflows", "prune").params, {}, [], "prune").data


def test_a_pruner_recorded_by_an_older_run_rebuilds_the_same():
    from ptl_prune.build import build_pruner

    old = build_pruner({"method": "iterand", "sparsity": 0.3, "rerand_freq": 5})
    new = build_pruner({"name": "iterand", "params": {"sparsity": 0.3, "rerand_freq": 5}})
    assert vars(old) == vars(new) and old.rate == 0.3


def test_dry_run_says_once_that_the_spelling_is_deprecated(tmp_path):
    old = write(tmp_path, "old", PRUNE_OLD)
    done = run_ptl("prune", "--recipe", old, "--set", "pruner.sparsity=0.55", "--dry-run")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("ptl: deprecated:")]
    assert len(lines) == 1 and "`[pruner] name`" in lines[0], done.stderr
    assert "0.55" in done.stdout  # the old key was applied
    new = run_ptl("prune", "--recipe", write(tmp_path, "new", PRUNE_NEW), "--dry-run")
    assert new.returncode == 0 and "deprecated" not in new.stderr, new.stderr
    arch = run_ptl("transfer", "--set", "model.arch=conv4", "--dry-run")
    assert arch.returncode == 0, arch.stderr
    assert arch.stderr.count("ptl: deprecated: `[model] arch` is read as `[model] name`") == 1
    assert "conv4" in arch.stdout


def test_a_sweep_grid_in_the_old_spelling_still_sweeps(tmp_path):
    done = run_ptl(
        "sweep", "--recipe", "iterand-quickstart", "--grid", "pruner.sparsity=0.3,0.6",
        "--out", tmp_path / "sw", "--dry-run", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("ptl: deprecated:") == 1
    assert len(json.loads(done.stdout)["cells"]) == 2
