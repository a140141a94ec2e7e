"""``compute.malloc_tuning``: CPU runs keep freed memory for reuse instead of faulting it in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ptl_cli.engine import malloc

pytestmark = pytest.mark.skipif(malloc._glibc() is None, reason="mallopt is glibc's")

# Where a step's 16 MB activation comes from. Untuned, glibc serves blocks above 128 KB with a
# fresh mmap, unmapped again when freed, so every step faults its pages in anew; tuned, they come
# from the heap (the ``[heap]`` mapping) and stay there for the next step. Prints whether the
# block lies in the heap, and the settings applied.
WHERE = """
import sys, torch
from ptl_cli.engine.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else []
block = torch.empty(4 * 2**20)  # 16 MB
address = block.data_ptr()
with open("/proc/self/maps") as fh:
    heap = [line.split()[0].split("-") for line in fh if line.rstrip().endswith("[heap]")]
in_heap = any(int(lo, 16) <= address < int(hi, 16) for lo, hi in heap)
print(in_heap, ",".join(applied))
"""


def _from_heap(mode: str, env: dict[str, str] | None = None) -> tuple[bool, str]:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", WHERE, mode], capture_output=True, text=True, check=True, cwd=root, env=env
    )
    in_heap, _, applied = done.stdout.strip().partition(" ")
    return in_heap == "True", applied


def test_large_blocks_come_from_the_heap_and_stay_for_the_next_step():
    assert _from_heap("plain") == (False, "")  # glibc's default: a fresh mmap
    in_heap, applied = _from_heap("tuned")
    assert in_heap and applied.split(",") == [v for v, _ in malloc.SETTINGS.values()]


def test_a_threshold_the_user_set_is_left_alone():
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # glibc's default, set explicitly
    in_heap, applied = _from_heap("tuned", env)
    assert applied.split(",") == ["MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"]
    assert not in_heap  # mmapped, as the user asked


def test_a_run_computes_the_same_with_and_without_it(tmp_path, one_thread):
    """The tuning changes where memory comes from, never a number: a tiny prune run logs the same
    metrics and ends with the same weights either way (each run in its own process)."""
    tiny = ["--model", "conv2", "--width", "0.25", "--epochs", "1", "--batch-size", "32",
            "--set", "data.train_limit=128", "--set", "data.test_limit=64", "--quiet"]  # fmt: skip
    runs = {}
    for flag in ("true", "false"):
        out = tmp_path / flag
        args = ["prune", "--method", "iterand", *tiny, "--set", f"compute.malloc_tuning={flag}", "--out", out]
        subprocess.run([sys.executable, "-m", "ptl_cli", *map(str, args)], check=True, capture_output=True)
        records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        runs[flag] = ([{k: v for k, v in r.items() if k != "time"} for r in records], out)
    assert runs["true"][0] == runs["false"][0] and len(runs["true"][0]) > 1
    a, b = (torch.load(out / "final.pt", weights_only=True)["model"] for _, out in runs.values())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
