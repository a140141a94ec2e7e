"""The transfer quickstart over several seeds, with the ceiling rows: a markdown table of every stage.

Runs ``ptl transfer --generator G --ssl fixmatch --seed S --json`` once per seed (extra arguments
after ``--`` are passed on), and with ``--ceiling`` the same recipe's ``pssl`` stage once more
per seed with the PCS pool replaced by *real* unlabeled target images (the target's other
training images of the same classes, i.e. plain FixMatch): what P-SSL would reach with a perfect
generator. It prints one markdown row per stage (mean ± std over the seeds, and each seed), and
whether PP+P-SSL beats the better of scratch and KD by more than the larger of their seed stds.

    python benchmarks/transfer_quickstart_seeds.py [--generator biggan|diffusers] [--seeds 0 1 2]
        [--ceiling] [--validation] [--parallel 3] [--recipe transfer-quickstart-far] [-- --set ...]

``--validation`` trains on the pack's ``fit`` split and measures on its ``val`` split (100 images
per class of the pack's train split, never the test split): use it for every tuning decision,
and the plain command (test split) once at the end. The PP and PCS pools do not depend on the run
seed: with ``--parallel`` a 1-step run makes them first, and the runs only read them. Runs go to
``$PTL_RUNS_DIR`` (./runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STAGES = ("scratch", "kd", "pp", "pssl", "pp_pssl")
LABELS = {
    "scratch": "scratch (supervised, labeled target images only)",
    "kd": "KD from the source classifier",
    "pp": "PP, then supervised fine-tuning",
    "pssl": "P-SSL (FixMatch on PCS pseudo samples)",
    "pp_pssl": "**PP + P-SSL** (the full method)",
    "ceiling_pssl": "ceiling: FixMatch on real unlabeled target images",
}
VALIDATION = ["--set", "target.train_split=fit", "--set", "target.test_split=val"]


def run(args: list[str], ceiling: bool) -> dict:
    """One ``ptl transfer`` in a subprocess (the ceiling through the controls' worker)."""
    if ceiling:
        worker = Path(__file__).with_name("transfer_quickstart_controls.py")
        head = [sys.executable, str(worker), "--worker"]
    else:
        head = [sys.executable, "-m", "ptl_cli"]
    started = time.perf_counter()
    done = subprocess.run([*head, "transfer", *args, "--json", "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr[-2000:]}")
    summary = json.loads(done.stdout)
    summary["wall"] = time.perf_counter() - started
    kind = "ceiling" if ceiling else "run"
    print(
        f"{kind} {' '.join(args[-2:])}: {summary['wall']:.0f} s, {summary['path']}",
        file=sys.stderr,
        flush=True,
    )
    for line in done.stderr.splitlines():  # the run's one-line warnings (e.g. PCS collapse)
        if "warning:" in line:
            print(line.strip(), file=sys.stderr)
    return summary


def cell(accs: list[float]) -> tuple[float, float, str]:
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return statistics.mean(accs), std, " / ".join(f"{a:.3f}" for a in accs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="biggan", help="biggan (default) or diffusers")
    parser.add_argument("--recipe", default=None, help="default: the quickstart recipe")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ceiling", action="store_true", help="add the real-unlabeled-images rows")
    parser.add_argument("--validation", action="store_true", help="fit/val splits, not the test split")
    parser.add_argument(
        "--parallel", type=int, default=1, help="runs at once (after the first, which makes the pools)"
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    base = ["--generator", args.generator, "--ssl", "fixmatch"]
    if args.recipe:
        base += ["--recipe", args.recipe]
    base += [*(VALIDATION if args.validation else []), *extra]
    jobs = [([*base, "--seed", str(seed)], False) for seed in args.seeds]
    if args.ceiling:
        jobs += [([*base, "--stages", "pssl", "--seed", str(seed)], True) for seed in args.seeds]
    if args.parallel > 1:  # one 1-step run makes the PP and PCS pools, so parallel runs only read them
        run([*base, "--stages", "pssl,pp+pssl", "--steps", "1", "--pp-steps", "1"], ceiling=False)
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda job: run(*job), jobs))
    runs, real = done[: len(args.seeds)], done[len(args.seeds) :]
    rows = {s: [r["metrics"].get(f"{s}_test_acc") for r in runs] for s in STAGES}
    if real:
        rows["ceiling_pssl"] = [r["metrics"].get("pssl_test_acc") for r in real]
    split = "val split (100/class of the pack's train split)" if args.validation else "test split"
    print(f"`{' '.join(['ptl transfer', *base])}`, seeds {args.seeds}, accuracy on the {split}\n")
    print("| stage | mean ± std | seeds " + " / ".join(map(str, args.seeds)) + " |")
    print("|---|---|---|")
    stats = {}
    for name, accs in rows.items():
        if any(a is None for a in accs):
            continue
        mean, std, per_seed = cell(accs)
        stats[name] = (mean, std)
        print(f"| {LABELS[name]} | {mean:.3f} ± {std:.3f} | {per_seed} |")
    if {"scratch", "kd", "pp_pssl"} <= stats.keys():
        best = max(("scratch", "kd"), key=lambda s: stats[s][0])
        margin = stats["pp_pssl"][0] - stats[best][0]
        spread = max(stats["pp_pssl"][1], stats[best][1])
        verdict = "beats" if margin > spread else "does not beat"
        print(
            f"\nPP+P-SSL {verdict} the better baseline ({best}) by more than the larger seed std: "
            f"{margin:+.3f} vs {spread:.3f}"
        )
    shares = [r["metrics"].get("pp_pssl_pseudo_label_max_share") for r in runs]
    walls = " / ".join(f"{r['wall']:.0f}" for r in runs)
    print(f"pp+pssl pseudo-label max share per seed: {shares}; wall seconds per run: {walls}")
    print(f"pcs_agreement: {[r['metrics'].get('pcs_agreement') for r in runs]}")


if __name__ == "__main__":
    main()
