"""A target nothing can download (Stanford Cars: its upstream link is dead): the run and its
``--dry-run`` say so in one line with where to put which files, before anything starts, and
once the files are in place ``--download`` is no obstacle. No test touches the network: the
refusal comes from ptl's own file check, before torchvision is called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptl_cli import plugins
from ptl_cli.errors import UserError
from ptl_cli.testing import run_ptl
from ptl_datasets import facts

CARS = ["transfer", "--recipe", "transfer-cars-sd-clip"]
FILES = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train/", "cars_test/")


def says_where_to_put_the_files(line: str, data: Path) -> None:
    assert "\n" not in line.strip() and "Traceback" not in line
    assert "stanford-cars cannot be downloaded: its download link is dead upstream" in line
    assert f"in {data / 'stanford_cars'} by hand" in line
    assert all(f in line for f in (*FILES, "cars_test_annos_withlabels.mat"))
    assert "docs/transfer.md#stanford-cars-by-hand" in line


def place(data: Path, leave_out: str = "") -> None:
    """The by-hand layout as file names (empty files: only the names are checked up front)."""
    for name in facts.BY_HAND["stanford-cars"].files:
        if name == leave_out:
            continue
        path = data / "stanford_cars" / name.rstrip("/")
        if name.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")


def test_download_of_missing_cars_is_exit_2_before_the_run_starts(cli, tmp_path):
    data, out = tmp_path / "data", tmp_path / "run"
    code, _, err = cli(*CARS, "--data-dir", data, "--download", "--out", out)
    assert code == 2
    says_where_to_put_the_files(err.removeprefix("ptl: error: "), data)
    assert not out.exists()  # refused by the plan: no run directory, no lanes started


def test_dry_run_reports_the_missing_files_and_the_dead_download(cli, tmp_path):
    data = tmp_path / "data"
    code, _, err = cli(*CARS, "--data-dir", data, "--download", "--dry-run")
    assert code == 2  # the real run would stop here, in the same words
    says_where_to_put_the_files(err.removeprefix("ptl: error: "), data)
    code, out, _ = cli(*CARS, "--data-dir", data, "--dry-run", "--json")  # no --download: it plans
    assert code == 0
    row = json.loads(out)["plan"]["target data"]
    assert row.startswith("not found; its download link is dead upstream") and "cars_train/" in row
    place(data, leave_out="cars_test_annos_withlabels.mat")
    code, out, _ = cli(*CARS, "--data-dir", data, "--dry-run", "--json")
    assert json.loads(out)["plan"]["target data"].startswith("cars_test_annos_withlabels.mat missing; ")


def test_download_is_no_obstacle_once_the_files_are_in_place(cli, tmp_path):
    data = tmp_path / "data"
    place(data)
    code, out, err = cli(*CARS, "--data-dir", data, "--download", "--dry-run", "--json")
    assert code == 0, err
    assert "every file present" in json.loads(out)["plan"]["target data"]
    # loading passes download=True on as False (torchvision's StanfordCars raises on it even when
    # the files are there): what stops these empty stand-ins is reading them, not a download
    spec = plugins.get("datasets", "stanford-cars")
    with pytest.raises(UserError) as err_:
        spec.build(str(data), "train", True, params={"image_size": 32})
    assert "cannot be downloaded" not in str(err_.value) and "downloading" not in str(err_.value)


def test_loading_missing_cars_names_the_files_with_or_without_download(tmp_path):
    spec = plugins.get("datasets", "stanford-cars")
    with pytest.raises(UserError) as err:
        spec.build(str(tmp_path), "test", True, params={"image_size": 32})
    says_where_to_put_the_files(str(err.value), tmp_path)
    with pytest.raises(UserError) as err:
        spec.build(str(tmp_path), "test", False, params={"image_size": 32})
    looked = tmp_path / "stanford_cars"
    assert str(err.value).startswith(f"stanford-cars (test) not found — looked in {looked}; ")
    assert "by hand (docs/transfer.md#stanford-cars-by-hand)" in str(err.value)


@pytest.mark.slow
def test_a_lane_stopped_by_bad_input_makes_the_run_exit_2(tmp_path):
    """Stages side by side: a lane's one-line error is the run's, with exit status 2 as in one
    process (not 1, a failure), and the run is kept for ``ptl resume`` once the files are there."""
    out, data = tmp_path / "run", tmp_path / "data"
    done = run_ptl(
        "transfer", "--target", "stanford-cars", "--data-dir", data, "--stages", "scratch,kd",
        "--set", "stage_processes=2", "--device", "cpu", "--out", out, "--quiet",
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("ptl: error: lane ")
    assert f"failed: stanford-cars (train) not found — looked in {data / 'stanford_cars'}; " in line
    assert "ptl: error: ptl: error:" not in line and f"`ptl resume {out}`" in line
