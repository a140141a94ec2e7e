"""A recipe, a sweep request and a target folder each mean one thing, or are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ptl_cli.errors import UserError


def test_a_value_where_a_section_belongs_is_an_error(cli, demo_site, tmp_path):
    code, _, err = cli("demo", "--set", "train=1", "--dry-run")
    assert code == 2 and "`train` is a section" in err and err.startswith("ptl: error: --set train=1")
    recipe = tmp_path / "r.toml"
    recipe.write_text('kind = "demo"\ncompute = "cpu"\n')
    code, _, err = cli("demo", "--recipe", recipe, "--dry-run")
    assert code == 2 and "`compute` is a section" in err and str(recipe) in err
    assert cli("demo", "--set", "train.steps=3", "--dry-run")[0] == 0  # its keys are fine


def test_extends_resolves_beside_the_recipe_that_says_it(cli, demo_site, tmp_path, monkeypatch):
    (tmp_path / "lab" / "sub").mkdir(parents=True)
    (tmp_path / "lab" / "sub" / "base.toml").write_text('kind = "demo"\n[train]\nsteps = 7\n')
    (tmp_path / "lab" / "sub" / "top.toml").write_text('extends = "base.toml"\n[train]\nlr = 0.2\n')
    (tmp_path / "base.toml").write_text('kind = "demo"\n[train]\nsteps = 99\n')  # in the cwd: not it
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("demo", "--recipe", "lab/sub/top.toml", "--dry-run", "--json")
    assert code == 0, err
    assert '"steps": 7' in out and '"lr": 0.2' in out


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--grid", "seed=1,2"), "give seeds with --seeds"),
        (("--seeds", "0,0"), "seed 0 is given twice"),
        (("--seeds", "18446744073709551616"), "not an integer in 0..18446744073709551615"),
        (("--grid", "train.steps=2,2"), "the value 2 is given twice"),
    ],
)
def test_sweep_requests_that_would_count_one_run_twice(cli, demo_site, tmp_path, flags, said):
    code, _, err = cli("sweep", "--recipe", "demo-default", *flags, "--dry-run")
    assert code == 2 and said in err and err.count("\n") == 1


def test_sweep_out_must_not_be_another_sweep_or_a_run(cli, demo_site, one_thread, tmp_path):
    first = tmp_path / "first"
    assert cli("sweep", "--recipe", "demo-default", "--seeds", "0", "--out", first, "--dry-run")[0] == 0
    from ptl_cli import sweep

    plan, _, base = sweep.plan(sweep.Request(recipe="demo-default", seeds="0", out=str(first)))
    sweep.prepare(plan, base)  # the sweep's record, as `ptl sweep` writes it before running cells
    code, _, err = cli("sweep", "--recipe", "demo-default", "--seeds", "1", "--out", first, "--dry-run")
    assert code == 2 and "holds another sweep" in err


def _folder(root, classes: dict[str, int]):
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_target_folder_needs_two_classes_and_images_in_each_split(tmp_path):
    from ptl_datasets.folder import imagefolder

    one = _folder(tmp_path / "one", {"cats": 5})
    with pytest.raises(UserError, match="images of one class only"):
        imagefolder(split="train", path=str(one), image_size=8)
    tiny = _folder(tmp_path / "tiny", {"cats": 1, "dogs": 1})
    assert len(imagefolder(split="train", path=str(tiny), image_size=8)) == 2  # 20% of 2 rounds to 0
    with pytest.raises(UserError, match="too few to hold 20% out for testing"):
        imagefolder(split="test", path=str(tiny), image_size=8)
    two = _folder(tmp_path / "two", {"cats": 5, "dogs": 5})
    assert len(imagefolder(split="train", path=str(two), image_size=8)) == 8


def test_images_decode_to_8_bit_pixels_in_every_mode_or_are_refused(tmp_path):
    from ptl_cli.data.photo import PhotoFiles, decode_file

    grey16 = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")  # opens as I;16: PIL alone clips it at 255
    decoded = decode_file(tmp_path / "g16.png")
    assert decoded.shape == (3, 16, 16)
    assert np.array_equal(decoded[0].numpy(), (grey16 >> 8).astype(np.uint8))
    assert np.array_equal(np.asarray(PhotoFiles([tmp_path / "g16.png"])(0))[..., 1], decoded[1].numpy())
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.tiff")
    assert decode_file(tmp_path / "cmyk.tiff")[:, 0, 0].tolist() == [255, 0, 0]
    Image.fromarray(grey16.astype(np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(UserError, match=r"float.tiff has floating-point pixels \(PIL mode F\)"):
        decode_file(tmp_path / "float.tiff")
    (tmp_path / "cut.png").write_bytes((tmp_path / "g16.png").read_bytes()[:40])
    with pytest.raises(UserError, match="cut.png cannot be decoded"):
        decode_file(tmp_path / "cut.png")


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ("train.batch_size=1000000000", "less than or equal to 65536"),
        ("pp.samples=10", "`pp.train.batch_size` 64 is larger than the pool (`pp.samples` 10)"),
    ],
)
def test_absurd_transfer_batches_are_refused_by_dry_run(cli, item, said):
    code, _, err = cli("transfer", "--set", item, "--dry-run")
    assert code == 2 and said in err and err.count("\n") == 1


def test_dry_run_refuses_an_empty_or_one_class_target_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    one = _folder(tmp_path / "one", {"cats": 5})
    for folder, said in ((tmp_path / "empty", "images of 0 class(es)"), (one, "images of 1 class(es)")):
        code, _, err = cli("transfer", "--target", folder, "--dry-run")
        assert code == 2 and said in err and err.count("\n") == 1
    two = _folder(tmp_path / "two", {"cats": 5, "dogs": 5})
    assert cli("transfer", "--target", two, "--dry-run")[0] == 0
