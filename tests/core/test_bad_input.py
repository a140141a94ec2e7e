"""Every kind of bad input: one line on stderr, exit status 2, no traceback, existing runs untouched.

The cases run against a real completed run (of the throwaway ``demo`` workflow) and a folder of
someone's files; after each case, every byte of both is compared with before.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def snapshot(*roots: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def existing(cli, demo_site, one_thread, tmp_path) -> Path:
    run = tmp_path / "runs" / "done"
    code, _, err = cli("demo", "--out", run, "--quiet")
    assert code == 0, err
    return run


def cases(tmp: Path, run: Path) -> list[tuple[str, list[object], str]]:
    """(what, arguments, expected words of the message); every one must exit with status 2."""
    (tmp / "typo.toml").write_text('kind = "demo"\n[train]\nlrr = 0.1\n')
    (tmp / "wrongtype.toml").write_text('kind = "demo"\nseed = "seven"\n')
    (tmp / "broken.toml").write_text('kind = "demo"\n[train\n')
    (tmp / "empty").mkdir()
    new = iter(tmp / "new" / str(i) for i in range(100))  # a fresh --out for cases that could run
    return [
        ("unknown command", ["demoo"], "No such command 'demoo'"),
        ("unknown option", ["demo", "--epochs", "3"], "No such option: --epochs"),
        ("unknown component kind", ["list", "modelz"], "did you mean 'models'"),
        ("unknown model name", ["list", "models", "conv66"], "unknown model 'conv66'; did you mean 'conv6'"),
        ("unknown option of a subcommand", ["runs", "show", run, "--yes"], "No such option: --yes"),
        (
            "unknown dataset name",
            ["demo", "--dataset", "fashion-pak", "--out", next(new)],
            "unknown dataset 'fashion-pak'; did you mean 'fashion-pack'",
        ),
        (
            "mistyped recipe key (--set)",
            ["demo", "--set", "train.stpes=3", "--out", next(new)],
            "--set train.stpes=3: unknown key `train.stpes` (did you mean 'steps'?)",
        ),
        (
            "mistyped recipe key (file)",
            ["demo", "--recipe", tmp / "typo.toml", "--out", next(new)],
            "typo.toml: unknown key `train.lrr` (did you mean 'lr'?)",
        ),
        (
            "wrong value type (--set)",
            ["demo", "--set", "train.lr=fast", "--dry-run"],
            "--set train.lr=fast: key `train.lr`",
        ),
        (
            "wrong value type (file)",
            ["demo", "--recipe", tmp / "wrongtype.toml", "--dry-run"],
            "wrongtype.toml: key `seed`",
        ),
        ("wrong value type (flag)", ["demo", "--seed", "x", "--dry-run"], "Invalid value for '--seed'"),
        ("malformed recipe file", ["demo", "--recipe", tmp / "broken.toml"], "not valid TOML"),
        ("missing recipe file", ["demo", "--recipe", tmp / "missing.toml"], "missing.toml not found"),
        ("unknown recipe name", ["recipes", "show", "demo-defualt"], "did you mean 'demo-default'"),
        ("--set without =", ["demo", "--set", "train.lr", "--dry-run"], "expected key.path=value"),
        (
            "missing dataset",
            ["demo", "--dataset", "cifar10", "--data-dir", tmp / "empty", "--out", next(new), "--quiet"],
            f"cifar10 (train) not found — looked in {tmp / 'empty' / 'cifar-10-batches-py'}",
        ),
        ("--out holding a run", ["demo", "--out", run], "already holds a run"),
        ("--out holding other files", ["demo", "--out", tmp / "mine"], "not an empty directory"),
        ("resuming a folder that is not a run", ["resume", tmp / "mine"], "is not a ptl run"),
        ("resuming a missing run", ["resume", tmp / "nope"], "not found"),
        ("resuming a completed run", ["resume", run], "already completed"),
        ("unavailable device", ["demo", "--device", "cuda:7", "--out", next(new)], "cuda:7"),
    ]


def test_bad_input_is_one_line_exit_2_and_touches_no_run(cli, existing, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my own files")
    before = snapshot(existing, mine)
    for what, args, expected in cases(tmp_path, existing):
        code, _, err = cli(*args)
        assert code == 2, f"{what}: exit {code}: {err}"
        assert err.startswith("ptl: error: ") and err.count("\n") == 1, f"{what}: {err!r}"
        assert "Traceback" not in err, what
        assert expected in err, f"{what}: {err!r}"
        assert snapshot(existing, mine) == before, f"{what} changed an existing run or folder"
    # bad input found once a run started (the missing dataset) leaves no half-made run behind
    made = sorted(p.name for p in (tmp_path / "new").iterdir()) if (tmp_path / "new").exists() else []
    assert not made, f"runs left behind by bad input: {made}"


def test_debug_shows_the_traceback(cli, demo_site):
    with pytest.raises(Exception, match="did you mean 'steps'"):
        from ptl_cli.cli import main

        main(["--debug", "demo", "--set", "train.stpes=3", "--dry-run"])
