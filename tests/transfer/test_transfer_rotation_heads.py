"""ReMixMatch and CRMatch in real tiny P-SSL runs: their rotation (and ``ds``) heads are trained
beside the network, checkpointed with it, and left out of the stage's weights and ``model.pt``."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(("name", "heads"), [("remixmatch", {"rotation"}), ("crmatch", {"rotation", "ds"})])
def test_a_tiny_pssl_run_trains_the_heads_and_saves_the_net_alone(name, heads, tmp_path, tx):
    sets = {
        "stages": ["pssl"],
        "ssl.name": name,
        "ssl.unlabeled": "real",
        "train.steps": 3,
        "train.log_every": 1,
    }
    data = tx.tiny_recipe(tmp_path / "pools", **sets)
    metrics = tx.run_transfer(data, tmp_path / "run")
    assert metrics is not None
    rows = [r for r in tx.records(tmp_path / "run") if "loss_rot" in r]
    assert len(rows) == 3 and all(r["loss_rot"] > 0 for r in rows)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "step-000000002.pt", weights_only=True)
    assert saved["phase"] == "pssl"  # the checkpoint after step 2 holds the heads beside the net
    assert {k.split(".")[1] for k in saved["state"]["model"] if k.startswith("heads.")} == heads
    for path in (tmp_path / "run" / "model.pt", tmp_path / "run" / "stages" / "pssl.pt"):
        weights = torch.load(path, weights_only=True)
        weights = weights.get("state_dict", weights)
        assert weights and not any("heads" in k for k in weights), path
