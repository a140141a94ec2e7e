"""Property: whatever the input, a ptl command succeeds or says what is wrong in one line (exit 2),
never shows a traceback, and leaves every file that existed before byte for byte as it was.

The inputs are generated: values of every type and out of range for recipe keys and flags, paths
that cannot be written, and a small run's files cut short at every byte (what a crash, a full disk
or a bad copy leaves). The CLI runs in this process (``cli``), so hundreds of cases take seconds.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def check(cli, args: tuple, *folders: Path, ok=(0, 2)) -> int:
    before = snapshot(*folders)
    code, _, err = cli(*args)
    assert code in ok, (args, code, err)
    assert "Traceback" not in err and "unexpected" not in err, (args, err)
    if code:
        assert err.count("\n") == 1 and err.startswith("ptl: error:"), (args, err)
    assert snapshot(*folders) == before, args
    return code


@pytest.fixture
def small_run(cli, demo_site, one_thread, tmp_path) -> Path:
    run = tmp_path / "runs" / "small"
    code, _, err = cli("demo", "--set", "train.steps=3", "--out", run, "--quiet")
    assert code == 0, err
    return run


VALUES = ["-1", "0", "1.5", "1e999", "nan", '"x"', "true", "[]", "{}", "[1,1]", "18446744073709551616", ""]
KEYS = ["seed", "train", "train.steps", "train.batch_size", "train.lr", "data", "data.limit", "compute"]
KEYS += ["compute.workers", "compute.device", "compute.precision", "compute.log", "name", "kind", "no.x"]


def test_generated_recipe_values_and_flags(cli, small_run, tmp_path):
    rng = random.Random(0)
    afile = tmp_path / "afile"
    afile.write_text("precious")
    cases = [("--set", f"{key}={value}") for key in KEYS for value in VALUES]
    cases += [("--seed", s) for s in ("-1", "18446744073709551616", "x", "1.5")]
    cases += [("--out", p) for p in (afile, afile / "x", small_run, small_run / "final.pt", tmp_path)]
    for _ in range(20):  # two at once
        first, second = f"train.steps={rng.choice(VALUES)}", f"{rng.choice(KEYS)}={rng.choice(VALUES)}"
        cases.append(("--set", first, "--set", second))
    refused = 0
    for flags in cases:
        refused += check(cli, ("demo", *flags, "--dry-run"), small_run, tmp_path) == 2
    assert refused > len(cases) // 2  # most of these are bad input, and said so


def direct(command, *args, **kwargs) -> tuple[int, str]:
    """A command's function called as ``main`` calls it, less the argument parsing (milliseconds
    instead of the ~70 ms of building the app): a PtlError is what ``main`` prints in one line."""
    from ptl_cli.errors import PtlError

    try:
        command(*args, **kwargs)
    except PtlError as exc:
        return exc.exit_code, str(exc)
    return 0, ""


def test_every_truncation_of_a_runs_files(cli, capsys, small_run, tmp_path):
    from ptl_cli import cli as commands
    from ptl_cli.launch import resume
    from ptl_cli.options import Common
    from ptl_cli.runs import Run

    runs = small_run.parent
    Run(small_run).release()  # be any other process that finds these files
    for name in ("run.json", "recipe.toml", "metrics.jsonl"):
        path = small_run / name
        whole = path.read_bytes()
        for cut in range(len(whole)):
            path.write_bytes(whole[:cut])
            before = snapshot(runs)
            results = [
                direct(commands.runs_show, str(small_run), as_json=True),
                direct(commands.runs_list, root=str(runs), as_json=True),
                direct(resume, str(small_run), Common(quiet=True)),
            ]
            capsys.readouterr()
            codes = [code for code, _ in results]
            assert codes[0] in (0, 2) and codes[1] == 0 and codes[2] == 2, (name, cut, results)
            assert all("\n" not in message for _, message in results), (name, cut, results)
            assert snapshot(runs) == before, (name, cut)
            if cut % 97 == 0:  # now and then through the whole CLI: the same outcome, in one line
                check(cli, ("runs", "show", small_run, "--json"), runs, ok=(codes[0],))
        path.write_bytes(whole)


def test_generated_sweep_and_export_requests(cli, small_run, tmp_path):
    grids = ["seed=1,2", "train.steps=2,2", "train.steps=", "=1", "train.steps=1,x", "nokey=1", "train=1,2"]
    for grid in grids:
        check(cli, ("sweep", "--recipe", "demo-default", "--grid", grid, "--dry-run"), small_run, ok=(2,))
    for seeds in ("0,0", "-1", "x", "18446744073709551616"):
        check(cli, ("sweep", "--recipe", "demo-default", "--seeds", seeds, "--dry-run"), small_run, ok=(2,))
    check(cli, ("sweep", "--recipe", "demo-default", "--out", small_run, "--dry-run"), small_run, ok=(2,))
    own = (small_run / "run.json", small_run / "metrics.jsonl", small_run, small_run / "final.pt" / "x")
    for target in own:
        check(cli, ("export", small_run, "-o", target), small_run, ok=(2,))
        check(cli, ("runs", "compare", small_run, "--plot", target, "--force"), small_run, ok=(2,))


BROKEN_SWEEPS = [b"{}", b"[]", b'{"spec": {}, "cells": []}', b'{"cells": [1]}', b"\xff", b""]


@pytest.mark.parametrize("text", BROKEN_SWEEPS)
def test_a_broken_sweep_json_is_named(cli, demo_site, tmp_path, text):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_bytes(text)
    for command in (("sweep", "show", sweep), ("resume", sweep)):
        check(cli, command, sweep, ok=(2,))
