"""Data-parallel scaling of `ptl prune` and `ptl transfer` under torchrun: images/s with 1, 2, ... ranks.

    python benchmarks/scale_ddp.py [--workflow prune|transfer] [--nproc 1 2] [--model conv6]
                                   [--width 0.5] [--batch 128] [--steps 30] [--device cpu] [--threads 1]

Each configuration is a real ``torchrun --standalone --nproc-per-node N -m ptl_cli ...`` run with
the same recipe and global batch, and its training throughput is read from the run's own
``metrics.jsonl`` timestamps, skipping the first ``--skip`` steps (start-up, first-step
allocation). ``prune``: one epoch of ``steps`` IteRand steps, no validation. ``transfer``: the
``pssl`` stage alone (FixMatch over the PCS pool, B = ``--batch`` labeled + 7B pseudo samples
a step), its pool made once beforehand. Printed: images/s per process count and the speed-up
and scaling efficiency relative to the first count, all from one invocation.

On one CPU machine the processes share the cores: with ``--threads 1`` (one thread per process)
and as many processes as idle cores, the speed-up shows the overhead of gradient all-reduce and
of the collectives the loop makes. On a multi-GPU machine use ``--device cuda``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def prune_command(args: argparse.Namespace, out: Path) -> tuple[list[str], str, int]:
    """``ptl prune`` arguments, the metrics stage to time, and the images a step consumes."""
    cmd = ["prune", "--recipe", "iterand-quickstart", "--quiet", "--out", str(out)]
    cmd += ["--device", args.device, "--model", args.model, "--width", str(args.width)]
    cmd += ["--epochs", "1", "--batch-size", str(args.batch)]
    for item in (
        f"data.train_limit={args.batch * args.steps}",
        "data.val_fraction=0.0",
        "data.test_limit=64",
        "train.log_every=1",
        f"train.checkpoint_every={10 * args.steps}",
    ):
        cmd += ["--set", item]
    return cmd, "train", args.batch


def transfer_command(args: argparse.Namespace, out: Path) -> tuple[list[str], str, int]:
    """``ptl transfer --stages pssl`` arguments (FixMatch, μ = 7), its stage and images per step."""
    cmd = ["transfer", "--quiet", "--out", str(out), "--device", args.device, "--stages", "pssl"]
    cmd += ["--arch", args.model, "--width", str(args.width)]
    for item in (
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch}",
        "train.log_every=1",
        f"train.checkpoint_every={10 * args.steps}",
        "ssl.mu=7",
        f"pool.dir={json.dumps(str(out.parent / 'pools'))}",
    ):
        cmd += ["--set", item]
    return cmd, "pssl", args.batch * 15  # B labeled + weak and strong views of 7B pseudo samples


def run(nproc: int, args: argparse.Namespace, root: Path) -> float:
    out = root / f"n{nproc}"
    build = prune_command if args.workflow == "prune" else transfer_command
    ptl_args, stage, images_per_step = build(args, out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "ptl_cli", *ptl_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PTL_RUNS_DIR": str(root)}
    env.setdefault("PTL_CACHE_DIR", str(root / "cache"))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"nproc {nproc} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    times = {r["step"]: r["time"] for r in rows if r.get("stage") == stage and "loss" in r}
    first, last = args.skip, args.steps
    return images_per_step * (last - first) / (times[last] - times[first])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", choices=("prune", "transfer"), default="prune")
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="conv6")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=128, help="global batch (labeled B for transfer)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5, help="first steps left out of the timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads per process")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nproc:
            results[n] = run(n, args, Path(tmp))
            print(f"{n} process(es): {results[n]:8.1f} images/s", flush=True)
    base, first = results[args.nproc[0]], args.nproc[0]
    what = f"{args.workflow} {args.model} width {args.width}, global batch {args.batch}, {args.device}"
    print(f"\n{what}, {args.threads} thread(s) per process")
    for n, ips in results.items():
        speedup = ips / base
        print(
            f"  nproc {n}: {ips:8.1f} images/s  speed-up {speedup:.2f}  efficiency {speedup * first / n:.2f}"
        )


if __name__ == "__main__":
    main()
