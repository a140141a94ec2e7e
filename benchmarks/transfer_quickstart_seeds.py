"""The transfer quickstart over several seeds: mean ± std test accuracy of every stage.

Runs ``ptl transfer --generator biggan --ssl fixmatch --seed S --json`` once per seed (extra
arguments are passed on), reads each run's final metrics and prints one row per stage. The PP and
PCS pools do not depend on the run seed: the first run makes them, the others reuse them.

    python benchmarks/transfer_quickstart_seeds.py [--seeds 0 1 2] [--parallel 1] [-- --arch conv4 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

STAGES = ("scratch", "kd", "pp", "pssl", "pp_pssl")


def run(seed: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "ptl_cli", "transfer", "--generator", "biggan", "--ssl", "fixmatch"]
    cmd += ["--seed", str(seed), "--json", "--quiet", *extra]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed} failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    summary["wall"] = time.perf_counter() - started
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (after the first)")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    first = run(args.seeds[0], extra)  # makes the pools the others reuse
    with ThreadPoolExecutor(args.parallel) as pool:
        rest = list(pool.map(lambda s: run(s, extra), args.seeds[1:]))
    summaries = [first, *rest]
    print(f"seeds {args.seeds}; extra arguments: {' '.join(extra) or '(none)'}")
    print(f"{'stage':10s} {'mean':>7s} {'std':>7s}   per seed")
    for stage in STAGES:
        accs = [s["metrics"].get(f"{stage}_test_acc") for s in summaries]
        if any(a is None for a in accs):
            continue
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{stage:10s} {statistics.mean(accs):7.4f} {std:7.4f}   {' '.join(f'{a:.4f}' for a in accs)}")
    gains = [s["metrics"]["pp_pssl_test_acc"] - s["metrics"]["scratch_test_acc"] for s in summaries]
    per_seed = " ".join(f"{g:+.4f}" for g in gains)
    print(f"pp+pssl - scratch: {statistics.mean(gains):+.4f} (per seed {per_seed})")
    for s in summaries:
        print(f"run {s['path']}: {s['wall']:.0f} s wall, pcs_agreement {s['metrics'].get('pcs_agreement')}")


if __name__ == "__main__":
    main()
