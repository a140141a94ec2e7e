"""The strong view's recipe keys (``ssl.strong_ops``, ``ssl.strong_magnitude``): validated before
anything runs, and reaching the views of a real P-SSL run."""

from __future__ import annotations

import pytest

from ptl_cli.data.views import make_views
from ptl_cli.testing import run_ptl


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("ssl.strong_ops=-1", "ssl.strong_ops"),
        ("ssl.strong_magnitude=1.5", "strong_magnitude is 'random' or a strength between 0 and 1, not 1.5"),
        ("ssl.strong_magnitude=uniform", "not 'uniform'"),
    ],
)
def test_a_bad_strong_policy_is_a_one_line_error_in_a_dry_run(setting, message):
    result = run_ptl("transfer", "--set", setting, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_keys_reach_the_strong_view_of_a_pssl_run(tmp_path, tx, monkeypatch):
    """A real one-step P-SSL run builds its views with the recipe's op count and magnitude policy
    (the views are recorded on their way through; that they change the images is
    ``tests/ssl/test_ssl_randaugment.py``'s, and that 3 ops are USB's is the reference test's)."""
    from ptl_transfer import loops

    seen = []

    def recording(images, names, mean, std, **policy):
        seen.append((tuple(names), policy))
        return make_views(images, names, mean, std, **policy)

    monkeypatch.setattr(loops, "make_views", recording)
    sets = {
        "stages": ["pssl"],
        "train.steps": 1,
        "ssl.unlabeled": "real",
        "ssl.strong_ops": 3,
        "ssl.strong_magnitude": 0.9,
    }
    tx.run_transfer(tx.tiny_recipe(tmp_path / "pools", **sets), tmp_path / "run")
    assert (("weak", "strong"), {"n_ops": 3, "magnitude": 0.9}) in seen
    assert [r["stage"] for r in tx.records(tmp_path / "run") if "loss" in r] == ["pssl"]
