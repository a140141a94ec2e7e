"""``benchmarks/gpu_check.py --smoke`` on the CPU: every section runs at tiny sizes, every row prints.

What a GPU run measures cannot be checked without a GPU. What can be is that the script runs in
one go the first time one is lent: each of its code paths runs here on real (tiny) models and
data, and every row of the table either carries its figures or says plainly why it was skipped
(no CUDA, no ``--reference`` checkout). Speeds are not asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

#: rows per section: 2 CLI runs + the sanitizer; 1 pytest row; sync setup + 6 steps; 3 models x 4
#: variants (prune, compile); 3 models x 2 precisions (reference); 2 precisions (fixmatch); 3 pools
ROWS = {"cli": 3, "tests": 1, "sync": 7, "prune": 12, "reference": 6, "fixmatch": 2, "pool": 3, "compile": 12}


def numbers(value) -> list[float]:
    """Every int/float inside ``value`` (dicts and lists searched), booleans excluded."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in numbers(v)]
    return []


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("gpu_check") / "smoke.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(SCRIPT), "--smoke", "--threads", "1", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU smoke run's skipped rows")
def test_smoke_run_has_every_row_with_figures_or_a_reason(smoke):
    data, table = smoke
    rows = data["rows"]
    by_section: dict[str, list[dict]] = {}
    for row in rows:
        by_section.setdefault(row["section"], []).append(row)
    assert {k: len(v) for k, v in by_section.items()} == ROWS
    for row in rows:
        label = f"{row['section']} | {row['case']} | {row['result']}"
        assert row["case"] in table and row["result"] in table, label  # the printed table has it
        assert row["status"] in ("ok", "skipped"), label
        if row["status"] == "ok":
            found = numbers(row["values"])
            assert found and all(math.isfinite(n) for n in found), label
            assert any(ch.isdigit() for ch in row["result"]), label
        elif row["section"] == "reference":
            assert row["result"] == "skipped (no --reference checkout given)", label
        else:
            assert row["result"].startswith("skipped (no CUDA"), label
    # what must actually run on a CPU: the fp32 eager steps, FixMatch/P-SSL, and every pool
    ok = {(r["section"], r["case"]) for r in rows if r["status"] == "ok"}
    for model in ("Conv-6", "ResNet-18 (CIFAR)", "ResNet-50 (tv)"):
        assert ("prune", f"{model} fp32") in ok
    assert ("fixmatch", "P-SSL vs FixMatch step, fp32") in ok
    assert {c for s, c in ok if s == "pool"} == {
        "BigGAN-deep-256 PP pool",
        "BigGAN-deep-256 PCS pool",
        "DiT-XL/2 PP pool",
    }
    assert ("sync", "setup (prune models)") in ok
    # the CLI runs' arguments are what the commands accept (checked with --dry-run on a CPU)
    assert {c for s, c in ok if s == "cli"} == {
        "ptl prune --method iterand --device cuda --epochs 1",
        "ptl transfer --device cuda (every stage, short, PP on the fly)",
    }
    # the CUDA-only tests were found (both known ones) and pytest collected them
    tests_row = by_section["tests"][0]["result"]
    assert "test_cuda_matches_cpu" in tests_row and "test_cuda_batches_arrive_on_the_device" in tests_row
    # ratios are ratios of the measured step times
    for row in by_section["prune"]:
        if row["status"] == "ok":
            v = row["values"]
            assert v["supermask_over_dense"] == pytest.approx(v["edge_popup_ms"] / v["dense_ms"])
            amortized = v["iterand_ms"] + v["redraw_ms"] / 300
            assert v["iterand_over_edge_popup"] == pytest.approx(amortized / v["edge_popup_ms"])
    assert data["meta"]["smoke"] is True and data["meta"]["device"] == "cpu"


def test_bad_reference_is_a_one_line_error():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--reference", str(ROOT / "no-such-checkout")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not a checkout of dchiji-ntt/iterand" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the full check")
def test_full_run_without_cuda_is_a_one_line_error():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no CUDA device here; run with --smoke for the CPU smoke test"
