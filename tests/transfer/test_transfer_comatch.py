"""CoMatch in a real tiny P-SSL run: its projection head is trained beside the network and left
out of the stage's weights and ``model.pt``; its queues are checkpointed, and a run interrupted
after step 3 and resumed equals an uninterrupted one."""

from __future__ import annotations

import torch

from ptl_cli.engine.checkpoint import CheckpointStore

#: A memory queue of 2 global batches (8 labeled + 16 unlabeled): full after step 2, smoothing
#: from step 3, wrapping around every 2 steps; a lowered threshold for the 8-class tiny model.
PARAMS = {"ssl.params.queue_batch": 2, "ssl.params.da_len": 3, "ssl.params.threshold": 0.2}


def test_comatch_transfer_trains_its_head_and_resumes_exactly(tmp_path, tx):
    data = tx.tiny_recipe(
        tmp_path / "pools", **{"stages": ["pssl"], "ssl.name": "comatch", "train.log_every": 1, **PARAMS}
    )
    whole = tx.run_transfer(data, tmp_path / "whole")
    out = tmp_path / "run"
    assert tx.run_transfer(data, out, stop_after=3) is None
    saved, _ = CheckpointStore(out / "checkpoints").load_newest()
    assert saved["phase"] == "pssl" and saved["state"]["step"] == 3
    ssl, model = saved["state"]["ssl"], saved["state"]["model"]
    assert ssl["queue_feats"].shape == (2 * (8 + 16), 64) and int(ssl["queue_ptr"]) == 24
    assert any(k.startswith("heads.proj.") for k in model)  # the head is trained and checkpointed
    resumed = tx.run_transfer(data, out, resuming=True)
    assert tx.without_seconds(resumed) == tx.without_seconds(whole)
    assert tx.records(out) == tx.records(tmp_path / "whole")
    rows = [r for r in tx.records(out) if "loss_contrast" in r]
    assert len(rows) == 6 and all(r["loss_contrast"] > 0 for r in rows)
    for path in (out / "model.pt", out / "stages" / "pssl.pt"):
        weights = torch.load(path, weights_only=True)
        weights = weights.get("state_dict", weights)
        assert weights and not any("heads" in k for k in weights), path
