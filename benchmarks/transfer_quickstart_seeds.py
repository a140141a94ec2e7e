"""The transfer quickstart over several seeds, with the ceiling row: a markdown table of every stage.

One ``ptl sweep`` over the seeds (every seed an ordinary run directory; rerunning the same command
skips finished seeds and resumes interrupted ones), and with ``--ceiling`` a second sweep of the
recipe's ``pssl`` stage with ``ssl.unlabeled=real``: the PCS pool replaced by the target's real
unlabeled training images (plain FixMatch), what P-SSL would reach with a perfect generator.
The table is read from ``ptl sweep show --json`` (mean ± std) and the cells' ``run.json``
(each seed), and says whether PP+P-SSL beats the better of scratch and KD by more than the
larger of their seed stds.

    python benchmarks/transfer_quickstart_seeds.py [--generator biggan|diffusers] [--seeds 0 1 2]
        [--ceiling] [--validation] [--jobs 3] [--recipe transfer-quickstart-far]
        [--out DIR] [-- --set key=value ...]

``--validation`` trains on the pack's ``fit`` split and measures on its ``val`` split (100 images
per class of the pack's train split, never the test split): use it for every tuning decision,
and the plain command (test split) once at the end. The PP and PCS pools do not depend on the run
seed: with ``--jobs`` above 1 a 1-step run makes them first, so the parallel cells only read them.
Sweeps go to ``--out`` (default ``./runs/bench-transfer-seeds-<generator>``); delete it to start
over with another recipe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
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


def ptl(*args: str) -> str:
    """``ptl ARGS`` in a subprocess; its stdout (the run stops the benchmark with its stderr)."""
    done = subprocess.run([sys.executable, "-m", "ptl_cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ptl {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def sweep(out: Path, recipe: str, seeds: list[int], jobs: int, sets: list[str]) -> list[dict]:
    """Run (or finish) one sweep over the seeds; each seed's ``run.json``, in seed order."""
    started = time.perf_counter()
    seed_list = ",".join(map(str, seeds))
    ptl(
        "sweep",
        "--recipe",
        recipe,
        "--seeds",
        seed_list,
        "--jobs",
        str(jobs),
        "--out",
        str(out),
        *sets,
        "--quiet",
    )
    shown = json.loads(ptl("sweep", "show", str(out), "--json"))
    cells = sorted((c for row in shown["rows"] for c in row["cells"]), key=lambda c: c["seed"])
    infos = [json.loads((out / "runs" / c["id"] / "run.json").read_text()) for c in cells]
    print(f"{out}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return infos


def row(accs: list[float]) -> tuple[float, float, str]:
    import statistics

    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return statistics.mean(accs), std, " / ".join(f"{a:.3f}" for a in accs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="biggan", help="biggan (default) or diffusers")
    parser.add_argument("--recipe", default="transfer-quickstart")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ceiling", action="store_true", help="add the real-unlabeled-images row")
    parser.add_argument("--validation", action="store_true", help="fit/val splits, not the test split")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (after the pools are made)")
    parser.add_argument("--out", type=Path, default=None, help="where the sweeps go")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = args.out or Path("runs") / f"bench-transfer-seeds-{args.generator}"
    sets = ["--set", "ssl.name=fixmatch"]
    if args.generator != "biggan":  # another generator: its own default parameters (bundled weights)
        sets += ["--set", f"source.generator.name={args.generator}", "--set", "source.generator.params={}"]
    sets += [*(VALIDATION if args.validation else []), *extra]
    if args.jobs > 1:  # one 1-step run makes the PP and PCS pools, so the parallel cells only read them
        ptl("transfer", "--recipe", args.recipe, *sets, "--stages", "pssl,pp+pssl", "--steps", "1",
            "--pp-steps", "1", "--out", str(out.with_name(out.name + "-pools")), "--quiet")  # fmt: skip
    runs = sweep(out / "method", args.recipe, args.seeds, args.jobs, sets)
    rows = {s: [r["metrics"].get(f"{s}_test_acc") for r in runs] for s in STAGES}
    if args.ceiling:
        ceiling_sets = [*sets, "--set", 'stages=["pssl"]', "--set", "ssl.unlabeled=real"]
        real = sweep(out / "ceiling", args.recipe, args.seeds, args.jobs, ceiling_sets)
        rows["ceiling_pssl"] = [r["metrics"].get("pssl_test_acc") for r in real]
    split = "val split (100/class of the pack's train split)" if args.validation else "test split"
    command = " ".join(["ptl sweep --recipe", args.recipe, "--seeds", ",".join(map(str, args.seeds)), *sets])
    print(f"`{command}`, accuracy on the {split}\n")
    print("| stage | mean ± std | seeds " + " / ".join(map(str, args.seeds)) + " |")
    print("|---|---|---|")
    stats = {}
    for name, accs in rows.items():
        if any(a is None for a in accs):
            continue
        mean, std, per_seed = row(accs)
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
    walls = " / ".join(f"{r['updated'] - r['created']:.0f}" for r in runs)
    print(f"pp+pssl pseudo-label max share per seed: {shares}; wall seconds per run: {walls}")
    print(f"pcs_agreement: {[r['metrics'].get('pcs_agreement') for r in runs]}")


if __name__ == "__main__":
    main()
