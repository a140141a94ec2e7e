"""Small-scale evidence for the IteRand paper's claim, on full Fashion-MNIST, on a CPU.

    python benchmarks/prune_fashion.py [--widths 0.125 0.25 0.5] [--epochs 2] [--jobs 2]
                                       [--out /tmp/ptl-prune-fashion]

Runs dense SGD, edge-popup and IteRand (``ptl prune``, one process per run, fixed seed) on the
full Fashion-MNIST (60k/10k, e.g. Debian's dataset-fashion-mnist) with Conv-2 at several widths,
then writes ``results.md`` (a table) and ``accuracy_vs_params.png`` (test accuracy against the
number of parameters each network keeps) into ``--out``.

The claim (Chijiwa et al. 2021, Fig. 2): pruning random weights needs more parameters before
pruning than weight training does to reach the same accuracy, and IteRand's re-draws close part
of that gap, i.e. IteRand beats edge-popup at equal width. Settings follow the paper (batch 128,
SGD momentum 0.9, weight decay 1e-4, cosine per epoch, p = 0.5, SGD lr 0.01) except what a
few-minute CPU budget forces: 2 epochs instead of 100, hence a score learning rate of 1.0 (as in
the quickstarts; 0.3 is tuned for 100 epochs) and K_per = 50 (IteRand then re-draws 16 times, as
it does ~117 times in the paper's run), and pad-crop + flip instead of random-resized crops.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

METHODS = ("sgd", "edge-popup", "iterand")


def method_flags(method: str, args: argparse.Namespace) -> list[str]:
    if method == "sgd":
        return ["--method", "sgd", "--lr", str(args.sgd_lr)]
    flags = ["--method", method, "--sparsity", "0.5", "--lr", str(args.score_lr)]
    return flags + (["--rerand-freq", str(args.k_per)] if method == "iterand" else [])


def run_one(out: Path, method: str, width: float, args: argparse.Namespace) -> dict:
    run = out / f"{method}-w{width:g}"
    summary = run / "summary.json"
    if summary.is_file():  # finished earlier: reuse (delete --out to start over)
        return json.loads(summary.read_text())
    if run.exists():
        import shutil

        shutil.rmtree(run)
    command = [
        sys.executable, "-m", "ptl_cli", "prune", *method_flags(method, args),
        "--model", "conv2", "--width", str(width), "--dataset", "fashion-mnist",
        "--epochs", str(args.epochs), "--batch-size", "128", "--seed", str(args.seed),
        "--set", "augment.crop=random", "--set", "augment.pad=4", "--set", "train.weight_decay=1e-4",
        "--set", "train.checkpoint_every=0", "--set", "train.log_every=100",
        "--device", "cpu", "--quiet", "--json", "--out", str(run),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} width {width} failed: {done.stderr.strip()}")
    result = json.loads(done.stdout)["metrics"]
    summary.write_text(json.dumps(result))
    return result


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method, marker in (("sgd", "s"), ("edge-popup", "o"), ("iterand", "^")):
        points = sorted((r["params_kept"], r["test_acc"]) for r in rows if r["method"] == method)
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker=marker, label=method)
    ax.set_xscale("log")
    # label exactly the measured sizes: log-scale defaults label nothing within a single decade
    kept = sorted({r["params_kept"] for r in rows})
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(kept))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.0f}k"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("parameters kept (Conv/Linear weights)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Fashion-MNIST, Conv-2 at several widths")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", nargs="+", type=float, default=[0.125, 0.25, 0.5])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--k-per", type=int, default=50, help="IteRand's K_per (steps between re-draws)")
    parser.add_argument("--score-lr", type=float, default=1.0, help="learning rate of the scores")
    parser.add_argument("--sgd-lr", type=float, default=0.01, help="learning rate of dense SGD")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default="/tmp/ptl-prune-fashion")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    grid = [(m, w) for w in sorted(args.widths, reverse=True) for m in METHODS]  # big ones first
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda mw: run_one(out, mw[0], mw[1], args), grid))
    lines = [
        f"Fashion-MNIST (60k train − 10% validation, 10k test), Conv-2, {args.epochs} epochs, "
        f"seed {args.seed}; lr {args.score_lr:g} (scores) / {args.sgd_lr:g} (SGD), "
        f"IteRand K_per {args.k_per}",
        "",
        "| method | width | params kept | sparsity | test acc | time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["width"], METHODS.index(r["method"]))):
        lines.append(
            f"| {r['method']} | {r['width']:g} | {r['params_kept']:,} | {r['sparsity']:.2f} | "
            f"{r['test_acc']:.4f} | {r['time_s']:.0f} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "accuracy_vs_params.png")
    print("\n".join(lines))
    print(f"\nwrote {out / 'results.md'} and {out / 'accuracy_vs_params.png'}")


if __name__ == "__main__":
    main()
