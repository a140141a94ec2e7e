"""The strong view's recipe keys (``ssl.strong_ops``, ``ssl.strong_magnitude``): validated before
anything runs, and reaching the views of a real P-SSL run."""

from __future__ import annotations

import pytest

from ptl_cli.testing import run_ptl

TINY = {"train.steps": 1, "train.log_every": 1, "ssl.params.threshold": 0.0}


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


def test_the_keys_reach_the_strong_view_of_a_pssl_run(tmp_path, tx):
    """Same seed, same pool, every pseudo label kept (threshold 0, so the strong view is in the
    loss from the first step): the op count and the magnitude policy change the first step's loss,
    and the default is the recorded one (2 ops, random magnitudes: naming them changes nothing)."""
    pools = tmp_path / "pools"

    def losses(name: str, **sets) -> list[float]:
        data = tx.tiny_recipe(pools, stages=["pssl"], **{**TINY, **sets})
        tx.run_transfer(data, tmp_path / name)
        return [r["loss"] for r in tx.records(tmp_path / name) if r.get("stage") == "pssl" and "loss" in r]

    default = losses("default")
    assert len(default) == 1
    assert losses("explicit", **{"ssl.strong_ops": 2, "ssl.strong_magnitude": "random"}) == default
    assert losses("three", **{"ssl.strong_ops": 3}) != default
    assert losses("fixed", **{"ssl.strong_magnitude": 0.9}) != default
