"""IteRand's Figure 2 at small scale: accuracy against parameters kept, on Fashion-MNIST, on CPUs.

    python benchmarks/prune_fashion.py [--widths 0.0625 0.125 0.25] [--seeds 0 1 2] [--epochs 10]
        [--train-subset 12000] [--threads 1] [--sc-widths 0.0625 0.125] [--out /tmp/ptl-prune-fashion]
        [--extra-arms mpt signed-supermask multicoated gem-miner edge-popup-frozen] [--gem-lr 10]

Two ``ptl sweep`` grids (every cell an ordinary ``ptl prune`` run, ``--jobs`` at once): dense SGD,
edge-popup and IteRand on Conv-2 at each width, for every seed (``OUT/kaiming-uniform``), and
edge-popup and IteRand with signed-constant weights at ``--sc-widths`` (by default every width but
the largest; ``OUT/signed-constant``). Each arm is a recipe the benchmark writes to
``OUT/recipes`` (the sweep's ``recipe`` axis). Accuracies are deterministic at a fixed thread
count; only times depend on the machine's load.
The data is the full Fashion-MNIST (``fashion-mnist``, e.g. Debian's
``/usr/share/datasets/fashion-mnist``): 10% of the train split held out for validation
(``split_seed`` 0, the same for every run), then ``--train-subset`` images of the rest
(``data.train_limit``, seeded), and the 10k test split.

The claim (Chijiwa et al. 2021, Fig. 2): pruning a random network needs more parameters before
pruning than weight training does to reach the same accuracy, and IteRand's re-draws close part
of that gap: IteRand ≥ edge-popup at every width, most at small widths. Settings follow the
paper (batch 128, SGD momentum 0.9, weight decay 1e-4, cosine per epoch, p = 0.5, r = 0.1) except
the length, and with it K_per, which keeps the paper's ratio of re-draws to steps:

    K_per = max(1, round(300 · total_steps / 35200))

(the paper: K_per = 300 in 100 epochs × 352 steps of CIFAR-10's 45k train images = 35,200 steps,
i.e. ~117 re-draws). Augmentation is random flips (``--augment crop`` adds the paper's pad-4
crops). Learning rates and augmentation were chosen on the validation split (see docs/prune.md),
never on the test split.

``--extra-arms`` adds a third grid (``OUT/slt-family``) at every width: the strong-lottery-ticket
family at p = 0.5 with each paper's defaults (``mpt``, ``signed-supermask``, ``multicoated``,
``gem-miner`` with its own ``--gem-lr``, and ``edge-popup-frozen``: edge-popup with a quarter of
each layer frozen pruned and a quarter kept); see :func:`extra_arm`.

Writes ``results.md`` (per-arm mean ± std over seeds, the per-seed IteRand − edge-popup gap, the
exact command) and ``accuracy_vs_params.png`` into ``--out``. Rerunning the same command skips
finished cells and resumes interrupted ones (``ptl sweep``); with other settings ``ptl sweep``
refuses the directory (delete ``--out`` to start over). ``ptl sweep show OUT/kaiming-uniform``
also aggregates a grid.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PAPER_STEPS, PAPER_K_PER = 35_200, 300  # IteRand, CIFAR-10: 100 epochs × ceil(45,000 / 128)
FULL_TRAIN, VAL_FRACTION, BATCH = 60_000, 0.1, 128
AUGMENT = {  # flips are on in both; "crop" adds the pad-4 random crops of the paper's CIFAR-10 runs
    "flip": ["--set", "augment.crop=none", "--set", "augment.pad=0"],
    "crop": ["--set", "augment.crop=random", "--set", "augment.pad=4"],
}


@dataclass(frozen=True)
class Arm:
    method: str  # sgd, edge-popup, iterand, or one of EXTRA's
    weight_init: str = "kaiming_uniform"
    params: str = ""  # more pruner parameters, inline TOML
    label: str = ""  # the arm's name, when not method[-sc]
    lr: float | None = None  # None: --score-lr
    weight_decay: float = 1e-4

    @property
    def name(self) -> str:
        return self.label or self.method + ("-sc" if self.weight_init == "signed_constant" else "")


ARMS = (Arm("sgd"), Arm("edge-popup"), Arm("iterand"))
SC_ARMS = (Arm("edge-popup", "signed_constant"), Arm("iterand", "signed_constant"))
#: the strong-lottery-ticket family (--extra-arms), each at p = 0.5 with its paper's defaults
EXTRA = ("mpt", "signed-supermask", "multicoated", "gem-miner", "edge-popup-frozen")
ORDER = ("sgd", "edge-popup", "iterand", "edge-popup-sc", "iterand-sc", *EXTRA)


def extra_arm(name: str, args: argparse.Namespace) -> Arm:
    """One arm of the SLT family: mpt (binarized, Kaiming normal, |S|), signed-supermask,
    multicoated (3 coats, the first at p = 0.5), gem-miner (target p = 0.5 in ~9 rounds, λ 3e-5,
    no weight decay, --gem-lr), edge-popup-frozen (edge-popup with 25% of each layer frozen pruned
    and 25% kept: the partial search, against the edge-popup arm)."""
    if name == "mpt":
        return Arm("mpt", "kaiming_normal", "score_abs = true", label=name)
    if name == "signed-supermask":
        return Arm("signed-supermask", label=name)
    if name == "multicoated":
        return Arm("multicoated", "signed_constant", "coat_sparsity = [0.9212, 0.9685]", label=name)
    if name == "gem-miner":
        every = max(1, (args.epochs - 1) // 9)  # about nine rounds, the last before the end
        return Arm("gem-miner", "signed_constant", f"prune_every = {every}", name, args.gem_lr, 0.0)
    if name == "edge-popup-frozen":
        return Arm("edge-popup", params="frozen_pruned = 0.25, frozen_kept = 0.25", label=name)
    raise ValueError(name)


def train_images(subset: int) -> int:
    """Training images per epoch: what ``ptl prune`` keeps after the hold-out and the limit."""
    kept = FULL_TRAIN - int(round(FULL_TRAIN * VAL_FRACTION))
    return min(subset, kept) if subset else kept


def total_steps(args: argparse.Namespace) -> int:
    return args.epochs * math.ceil(train_images(args.train_subset) / BATCH)


def scaled_k_per(steps: int) -> int:
    """The paper's K_per scaled to a run of ``steps`` steps (the same number of re-draws)."""
    return max(1, round(PAPER_K_PER * steps / PAPER_STEPS))


def arm_recipe(arm: Arm, args: argparse.Namespace) -> str:
    """The arm's recipe (TOML): the benchmark's data, length and optimizer with the arm's pruner."""
    if arm.method == "sgd":
        pruner, lr = 'name = "sgd"', args.sgd_lr
    else:
        params = f'sparsity = 0.5, weight_init = "{arm.weight_init}"'
        if arm.method == "iterand":
            params += f", rerand_freq = {args.k_per}, rerand_lambda = 0.1"
        params += f", {arm.params}" if arm.params else ""
        pruner, lr = f'name = "{arm.method}"\nparams = {{ {params} }}', arm.lr or args.score_lr
    crop, pad = ("random", 4) if args.augment == "crop" else ("none", 0)
    return f"""kind = "prune"
extends = "prune-quickstart"
description = "benchmarks/prune_fashion.py: {arm.name}"
[pruner]
{pruner}
[model]
name = "conv2"
[data]
dataset = "fashion-mnist"
train_limit = {args.train_subset}
val_fraction = {VAL_FRACTION}
[augment]
crop = "{crop}"
pad = {pad}
flip = true
[train]
epochs = {args.epochs}
batch_size = {BATCH}
lr = {lr}
weight_decay = {arm.weight_decay:g}
checkpoint_every = 0
log_every = 100
[compute]
device = "cpu"
"""


def sweep(out: Path, arms: tuple[Arm, ...], widths: list[float], args: argparse.Namespace) -> list[dict]:
    """One ``ptl sweep`` over widths × arms × seeds (reused on rerun); a row per finished cell."""
    recipes = out.parent / "recipes"  # beside the sweep: its directory must hold only the sweep
    recipes.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        (recipes / f"fashion-{arm.name}.toml").write_text(arm_recipe(arm, args))
    env = {**os.environ, "PTL_RECIPE_PATH": str(recipes)}
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    names = ",".join(f"fashion-{arm.name}" for arm in arms)
    width_values = ",".join(f"{w:g}" for w in widths)
    command = [
        sys.executable, "-m", "ptl_cli", "sweep", "--grid", f"model.width={width_values}",
        "--grid", f"recipe={names}", "--seeds", ",".join(map(str, args.seeds)), "--jobs", str(args.jobs),
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command[2:])} failed: {done.stderr.strip()[-2000:]}")
    sweep_record = json.loads((out / "sweep.json").read_text())
    rows = []
    for cell in sweep_record["cells"]:
        info = json.loads((out / "runs" / cell["id"] / "run.json").read_text())
        arm = cell["point"]["recipe"].removeprefix("fashion-")
        width = float(cell["point"]["model.width"])
        rows.append({**info["metrics"], "arm": arm, "width": width, "seed": cell["seed"]})
        rows[-1]["wall_s"] = info["updated"] - info["created"]
    return rows


def mean_std(values: list[float]) -> str:
    """``mean ± sample std`` (n − 1), or the single value."""
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def kept(group: list[dict]) -> float:
    """The weights an arm keeps at one width, as a mean over its seeds: a fixed sparsity keeps the
    same count on every seed, Gem-Miner's rounding stops wherever its scores fall."""
    return statistics.mean(r["params_kept"] for r in group)


def kept_text(group: list[dict]) -> str:
    """``6,570``, or ``5,806 (5,706–5,969)`` where the seeds kept different counts."""
    counts = [r["params_kept"] for r in group]
    if len(set(counts)) == 1:
        return f"{counts[0]:,}"
    return f"{kept(group):,.0f} ({min(counts):,}–{max(counts):,})"


def table(rows: list[dict], args: argparse.Namespace, command: str) -> list[str]:
    n = train_images(args.train_subset)
    lines = [
        f"Fashion-MNIST: {n:,} train images (of the 54,000 left after holding out 6,000 for "
        f"validation), 10,000 test; Conv-2, p = 0.5, {args.epochs} epochs = {total_steps(args)} steps, "
        f"IteRand K_per = {args.k_per}, r = 0.1; lr {args.score_lr:g} (scores) / {args.sgd_lr:g} "
        f"(SGD); seeds {', '.join(map(str, args.seeds))}; mean ± std (n − 1) over seeds.",
        "",
        f"Command: `{command}`",
        "",
        "| arm | width | params kept | test acc | val acc | time / run (s) |",
        "|---|---|---|---|---|---|",
    ]
    cells: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["arm"], r["width"]), []).append(r)
    for (arm, width), group in sorted(cells.items(), key=lambda kv: (kv[0][1], ORDER.index(kv[0][0]))):
        test, val = mean_std([g["test_acc"] for g in group]), mean_std([g["val_acc"] for g in group])
        seconds = statistics.median(g["time_s"] for g in group)
        lines.append(f"| {arm} | {width:g} | {kept_text(group)} | {test} | {val} | {seconds:.0f} |")
    lines += ["", "IteRand − edge-popup, test accuracy, per seed (paired):", ""]
    lines += ["| weights | width | gap (mean ± std) | per seed |", "|---|---|---|---|"]
    for width in sorted({w for _, w in cells}):
        for suffix, label in (("", "Kaiming uniform"), ("-sc", "signed constant")):
            ep, it = cells.get((f"edge-popup{suffix}", width)), cells.get((f"iterand{suffix}", width))
            if not ep or not it:
                continue
            by_seed = {r["seed"]: r["test_acc"] for r in ep}
            gaps = [r["test_acc"] - by_seed[r["seed"]] for r in sorted(it, key=lambda r: r["seed"])]
            shown = " ".join(f"{g:+.4f}" for g in gaps)
            spread = shown
            if len(gaps) > 1:
                spread = f"{statistics.mean(gaps):+.4f} ± {statistics.stdev(gaps):.4f}"
            lines.append(f"| {label} | {width:g} | {spread} | {shown} |")
    return lines


def plot(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    styles = {
        "sgd": ("s", "-", "C0", "SGD (dense weights)"),
        "edge-popup": ("o", "-", "C1", "edge-popup"),
        "iterand": ("^", "-", "C2", "IteRand"),
        "edge-popup-sc": ("o", "--", "C1", "edge-popup, signed constant"),
        "iterand-sc": ("^", "--", "C2", "IteRand, signed constant"),
        "mpt": ("D", ":", "C3", "MPT (binarized)"),
        "signed-supermask": ("v", ":", "C4", "signed supermask"),
        "multicoated": ("P", ":", "C5", "multicoated (3 coats)"),
        "gem-miner": ("*", ":", "C6", "Gem-Miner"),
        "edge-popup-frozen": ("o", ":", "C7", "edge-popup, half frozen"),
    }
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for arm in ORDER:
        widths = sorted({r["width"] for r in rows if r["arm"] == arm})
        if not widths:
            continue
        xs, ys, es = [], [], []
        for width in widths:
            group = [r for r in rows if r["arm"] == arm and r["width"] == width]
            accs = [r["test_acc"] for r in group]
            xs.append(kept(group) * (1.04 if arm.endswith("-sc") else 1.0))  # side by side, not on top
            ys.append(statistics.mean(accs))
            es.append(statistics.stdev(accs) if len(accs) > 1 else 0.0)
        marker, line, color, label = styles[arm]
        ax.errorbar(xs, ys, yerr=es, marker=marker, linestyle=line, color=color, label=label, capsize=3)
    ax.set_xscale("log")
    # label exactly the measured sizes: log-scale defaults label little within one decade
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r["width"]), []).append(r)
    ticks = sorted({round(kept(group)) for group in groups.values()})
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / 1000:,.1f}k"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    ax.set_xlabel("parameters kept (Conv/Linear weights)")
    ax.set_ylabel("test accuracy")
    ax.set_title(
        f"Fashion-MNIST ({train_images(args.train_subset) // 1000}k train), Conv-2, {args.epochs} epochs, "
        f"{len(args.seeds)} seeds",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", nargs="+", type=float, default=[0.0625, 0.125, 0.25])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--train-subset", type=int, default=12_000, help="training images per epoch (0 = all 54,000)"
    )
    parser.add_argument(
        "--sc-widths",
        nargs="*",
        type=float,
        default=None,
        help="widths that also run signed-constant edge-popup and IteRand (default: all but the largest)",
    )
    parser.add_argument("--k-per", type=int, default=0, help="IteRand's K_per (0: the paper's 300, scaled)")
    parser.add_argument("--score-lr", type=float, default=1.0, help="learning rate of the scores")
    parser.add_argument("--sgd-lr", type=float, default=0.03, help="learning rate of dense SGD")
    parser.add_argument(
        "--augment", choices=sorted(AUGMENT), default="flip", help="flip: flips; crop: pad-4 crops + flips"
    )
    parser.add_argument(
        "--extra-arms",
        nargs="*",
        choices=EXTRA,
        default=[],
        help="SLT-family arms at every width (OUT/slt-family): " + ", ".join(EXTRA),
    )
    parser.add_argument("--gem-lr", type=float, default=10.0, help="learning rate of Gem-Miner's scores")
    parser.add_argument(
        "--skip-base",
        action="store_true",
        help="run only --extra-arms (the SGD/edge-popup/IteRand grids are deterministic: see docs/prune.md)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with --threads)")
    parser.add_argument("--out", default="/tmp/ptl-prune-fashion")
    args = parser.parse_args()
    if args.train_subset < 0 or args.epochs < 1 or args.threads < 1 or args.jobs < 1:
        parser.error("--train-subset must be ≥ 0, --epochs, --threads and --jobs ≥ 1")
    if args.skip_base and not args.extra_arms:
        parser.error("--skip-base runs only --extra-arms: name some")
    args.k_per = args.k_per or scaled_k_per(total_steps(args))
    below_largest = [w for w in args.widths if w < max(args.widths)] or args.widths
    sc_widths = below_largest if args.sc_widths is None else args.sc_widths
    command = shlex.join(["python", "benchmarks/prune_fashion.py", *sys.argv[1:]])
    print(f"command: {command}", flush=True)
    print(
        f"{train_images(args.train_subset):,} train images, {total_steps(args)} steps, K_per = {args.k_per} "
        f"(round(300 · {total_steps(args)} / 35200)), {args.threads} thread(s) per run",
        flush=True,
    )
    out = Path(args.out)
    start = time.perf_counter()
    rows = [] if args.skip_base else sweep(out / "kaiming-uniform", ARMS, args.widths, args)
    if sc_widths and not args.skip_base:
        rows += sweep(out / "signed-constant", SC_ARMS, sc_widths, args)
    if args.extra_arms:
        rows += sweep(
            out / "slt-family", tuple(extra_arm(n, args) for n in args.extra_arms), args.widths, args
        )
    expected = total_steps(args)
    if any(r["steps"] != expected for r in rows):
        raise SystemExit(f"runs took {sorted({r['steps'] for r in rows})} steps, K_per assumed {expected}")
    lines = table(rows, args, command)
    spent = sum(r["wall_s"] for r in rows)
    lines += ["", f"{len(rows)} runs, {spent / 60:.0f} min of run wall time ({args.threads} thread(s) each)."]
    print(f"this invocation: {time.perf_counter() - start:.0f} s (finished runs are reused)")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, out / "accuracy_vs_params.png", args)
    print("\n".join(lines))
    print(f"\nwrote {out / 'results.md'} and {out / 'accuracy_vs_params.png'}")


if __name__ == "__main__":
    main()
