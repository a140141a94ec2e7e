"""``ptl bench``: runs on this device with tiny settings and reports rows and ratios.

Only the shape of the report is asserted: timings are measurements, never test conditions.
"""

from __future__ import annotations

import json

from ptl_cli.testing import run_ptl


def test_bench_prune_and_transfer_json():
    proc = run_ptl(
        "bench",
        "--device", "cpu", "--threads", "1", "--steps", "1", "--warmup", "0",
        "--width", "0.25", "-b", "8", "--mu", "2", "--ssl", "simmatch,remixmatch", "--json",
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    prune, transfer = json.loads(proc.stdout)
    assert [r["what"] for r in prune["rows"]] == [
        "loader", "augmentation", "dense step", "supermask step", "iterand re-draw",
    ]  # fmt: skip
    assert set(prune["ratios"]) == {
        "loader_vs_step_throughput",
        "supermask_vs_dense_step_time",
        "redraw_overhead_at_k_per",
        "augmentation_share_of_step",
    }
    assert [r["what"] for r in transfer["rows"]] == [
        "loader",
        "unlabeled views",
        "supervised step",
        "fixmatch step",
        "simmatch step",  # with its projection head and a full labeled bank
        "remixmatch step",  # with its rotation head and two strong views
    ]
    assert transfer["rows"][0]["images_per_step"] == 8 * (1 + 2)
    assert transfer["rows"][3]["images_per_step"] == 8 * (1 + 2 * 2)
    assert transfer["rows"][5]["images_per_step"] == 8 * (1 + 2 * 3)  # weak, strong, strong:1
    assert {"simmatch_vs_fixmatch_step_time", "remixmatch_vs_fixmatch_step_time"} <= set(transfer["ratios"])
    for report in (prune, transfer):
        assert report["device"] == "cpu"
        assert all(r["ms_per_step"] > 0 for r in report["rows"])
        assert all(v > 0 for v in report["ratios"].values())


def test_bench_rejects_unknown_workflows_and_precisions():
    proc = run_ptl("bench", "pruning", "--device", "cpu")
    assert proc.returncode == 2 and "choose from prune, transfer" in proc.stderr
    proc = run_ptl("bench", "transfer", "--ssl", "simmatch,fixmach", "--device", "cpu")
    assert proc.returncode == 2 and "fixmach" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_ptl("bench", "--precision", "fp8", "--device", "cpu")
    assert proc.returncode == 2 and "fp32" in proc.stderr
