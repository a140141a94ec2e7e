"""The quickstart recipes learn: far above chance (10%) on the bundled data after one epoch."""

from __future__ import annotations

import json

import pytest

from ptl_cli.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("method", ["iterand", "edge-popup"])
def test_quickstart_learns_far_above_chance(capsys, tmp_path, method):
    """The real quickstart recipe (Conv-2, 4,500 real images), shortened to one epoch of 36 steps."""
    extra = ["--rerand-freq", "10"] if method == "iterand" else []  # three re-draws within the epoch
    main(["prune", "--method", method, "--epochs", "1", *extra, "--out", str(tmp_path / "run"), "--quiet"])
    capsys.readouterr()
    main(["runs", "show", str(tmp_path / "run"), "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["recipe"]["name"] == f"{method}-quickstart"
    assert summary["metrics"]["test_acc"] > 0.5  # chance is 0.1
    assert summary["metrics"]["sparsity"] == pytest.approx(0.5, abs=1e-6)
