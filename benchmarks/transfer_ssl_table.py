"""Every SSL algorithm as P-SSL and PP + P-SSL on the transfer quickstart: a markdown table.

One ``ptl sweep`` of the quickstart recipe's ``pssl`` and ``pp+pssl`` stages over the algorithms
and seeds (every cell an ordinary run directory; rerunning the same command skips finished cells
and resumes interrupted ones), plus one sweep per algorithm that needs its own parameters for a
600-step stage (``--params ALGO:key=value``, chosen on the validation split: see
docs/transfer.md, "Choosing an SSL algorithm"). The table is read from the cells' ``run.json``:
test accuracy of each stage as mean ± std over the seeds, each seed's value, and the ``pssl``
stage's wall time over FixMatch's in the same sweep (cells share the cores, so this is a rough
ratio; ``ptl bench transfer --ssl`` measures the step alone).

    python benchmarks/transfer_ssl_table.py [--ssl fixmatch,dash,...] [--seeds 0 1 2] [--jobs 2]
        [--params dash:warmup_steps=60 ...] [--validation] [--out DIR] [--show] [-- --set key=value ...]

``--validation`` trains on the pack's ``fit`` split and measures on its ``val`` split (never the
test split): every choice of ``--params`` is made there, and the plain command (test split) once
at the end. ``--show`` prints the table from the cells finished so far and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from transfer_quickstart_seeds import VALIDATION, ptl  # the same subprocess call and split switch

ALL = (
    "fixmatch,adamatch,comatch,crmatch,dash,defixmatch,flexmatch,freematch,meanteacher,mixmatch,"
    "pimodel,pseudolabel,remixmatch,simmatch,softmatch,uda,vat"
)
STAGES = ("pssl", "pp_pssl")


def parse_params(items: list[str]) -> dict[str, list[str]]:
    """``ALGO:key=value`` items -> ``{algo: ["ssl.params.key=value", ...]}``."""
    params: dict[str, list[str]] = defaultdict(list)
    for item in items:
        algo, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise SystemExit(f"--params {item!r}: write ALGO:key=value, e.g. dash:warmup_steps=60")
        params[algo].append(f"ssl.params.{setting}")
    return dict(params)


def sweep(
    out: Path, recipe: str, grid: list[str], seeds: list[int], jobs: int, sets: list[str]
) -> list[dict]:
    """Run (or finish) one sweep over ``ssl.name`` x seeds; every cell's ``run.json`` with its
    algorithm (``ssl``) and ``seed``."""
    started = time.perf_counter()
    ptl("sweep", "--recipe", recipe, "--grid", "ssl.name=" + ",".join(grid), "--seeds",
        ",".join(map(str, seeds)), "--jobs", str(jobs), "--out", str(out), *sets, "--quiet")  # fmt: skip
    print(f"{out}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return finished(out)


def finished(out: Path) -> list[dict]:
    """The completed cells of the sweep in ``out``: each ``run.json`` with its algorithm and seed."""
    if not (out / "sweep.json").is_file():
        return []
    runs = []
    for cell in json.loads((out / "sweep.json").read_text())["cells"]:
        info = out / "runs" / cell["id"] / "run.json"
        if cell["status"] == "completed" and info.is_file():
            runs.append(
                {"ssl": cell["point"]["ssl.name"], "seed": cell["seed"], **json.loads(info.read_text())}
            )
    return runs


def summary(values: list[float]) -> str:
    """``mean ± std`` over the seeds."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssl", default=ALL, help="comma-separated algorithms (default: all 17)")
    parser.add_argument("--recipe", default="transfer-quickstart")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", nargs="*", default=[], help="ALGO:key=value, a sweep of its own")
    parser.add_argument("--validation", action="store_true", help="fit/val splits, not the test split")
    parser.add_argument("--stages", default="pssl,pp+pssl", help="the recipe stages each cell runs")
    parser.add_argument("--jobs", type=int, default=2, help="cells at once")
    parser.add_argument("--out", type=Path, default=Path("runs") / "bench-transfer-ssl")
    parser.add_argument("--show", action="store_true", help="only read the sweeps' finished cells")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    algorithms = args.ssl.split(",")
    params = parse_params(args.params)
    unknown = sorted(set(params) - set(algorithms))
    if unknown:
        raise SystemExit(f"--params names {unknown}, not in --ssl")
    stages = json.dumps(args.stages.split(","))
    sets = ["--set", f"stages={stages}", *(VALIDATION if args.validation else []), *extra]
    runs: list[dict] = []
    plain = [a for a in algorithms if a not in params]

    def run(out: Path, grid: list[str], sets: list[str]) -> list[dict]:
        return finished(out) if args.show else sweep(out, args.recipe, grid, args.seeds, args.jobs, sets)

    if plain:
        runs += run(args.out / "defaults", plain, sets)
    for algo, settings in params.items():
        runs += run(args.out / algo, [algo], [*sets, *(x for s in settings for x in ("--set", s))])

    by_algo: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_algo[run["ssl"]].append(run)
    seconds = {a: statistics.median(r["metrics"]["pssl_seconds"] for r in rs) for a, rs in by_algo.items()}
    split = "val split (100/class of the pack's train split)" if args.validation else "test split"
    print(f"accuracy on the {split}; seeds {', '.join(map(str, args.seeds))}\n")
    print("| `--ssl` | P-SSL | PP + P-SSL | P-SSL per seed | PP + P-SSL per seed | P-SSL time / FixMatch's |")
    print("|---|---|---|---|---|---|")
    for algo in sorted(algorithms, key=lambda a: (a != "fixmatch", a)):  # the reference first
        cells = sorted(by_algo.get(algo, []), key=lambda r: r["seed"])
        if not cells:
            continue
        columns = []
        for stage in STAGES:
            values = [r["metrics"].get(f"{stage}_test_acc") for r in cells]
            ok = bool(values) and all(v is not None for v in values)
            columns.append((summary(values), " / ".join(f"{v:.3f}" for v in values)) if ok else ("–", "–"))
        ratio = f"{seconds[algo] / seconds['fixmatch']:.2f}" if "fixmatch" in seconds else "–"
        name = f"`{algo}`" + (
            " (" + ", ".join(s.removeprefix("ssl.params.") for s in params[algo]) + ")"
            if algo in params
            else ""
        )
        print(f"| {name} | {columns[0][0]} | {columns[1][0]} | {columns[0][1]} | {columns[1][1]} | {ratio} |")
    shares = {
        a: max(r["metrics"].get("pp_pssl_pseudo_label_max_share") or 0 for r in rs)
        for a, rs in by_algo.items()
    }
    print(f"\nlargest PP + P-SSL pseudo-label share per algorithm: {shares}")


if __name__ == "__main__":
    main()
