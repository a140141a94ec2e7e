"""Two controls for a transfer recipe's result (docs/transfer.md, "The far pair").

Both run the recipe (default ``transfer-quickstart-far``) unchanged except for one thing, over
several seeds:

* ``real`` -- the ``pssl`` stage with the PCS pool replaced by *real* unlabeled target images (the
  bundled pack's images of the target classes minus the labeled ones: ``ssl.unlabeled = "real"``),
  i.e. plain FixMatch. If
  this beats scratch, the SSL machinery and the recipe's schedule (steps, τ, λ_u, EMA) leave
  room for SSL to help, and what P-SSL lacks is in the pseudo samples.
* ``matched`` -- the target is classes 0-4, the source models' own classes (this breaks the
  issue's disjoint label spaces: a diagnostic, not a result). If PP+P-SSL beats scratch there,
  the method is implemented right and the quickstart's pair is what leaves it nothing to transfer.

    python benchmarks/transfer_quickstart_controls.py [--recipe R] [--arms real matched]
        [--seeds 0 1 2] [-- ARGS]

ARGS are passed on to every ``ptl transfer`` (e.g. ``-- --steps 20`` for a quick look).

Runs go to ``$PTL_RUNS_DIR`` (default ./runs); pools to the usual cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

QUICKSTART = ["transfer", "--generator", "biggan", "--ssl", "fixmatch", "--json", "--quiet"]
ARMS = {
    "real": ["--stages", "scratch,pssl", "--set", "ssl.unlabeled=real"],
    "matched": ["--stages", "scratch,pp,pssl,pp+pssl", "--set", "target.classes=[0,1,2,3,4]"],
}
STAGES = ("scratch", "pp", "pssl", "pp_pssl")


def run(arm: str, seed: int, extra: list[str], recipe: str) -> dict:
    args = [*QUICKSTART, "--recipe", recipe, *ARMS[arm], "--seed", str(seed), *extra]
    done = subprocess.run([sys.executable, "-m", "ptl_cli", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["real", "matched"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipe", default="transfer-quickstart-far")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    for arm in args.arms:
        results = [run(arm, seed, extra, args.recipe) for seed in args.seeds]
        print(f"{arm}: {' '.join([*ARMS[arm], *extra])}; seeds {args.seeds}")
        for stage in STAGES:
            accs = [r.get(f"{stage}_test_acc") for r in results]
            if any(a is None for a in accs):
                continue
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            per_seed = " / ".join(f"{a:.3f}" for a in accs)
            print(f"  {stage:8s} {statistics.mean(accs):.4f} ± {std:.4f}   ({per_seed})")
        shares = [r.get("pssl_pseudo_label_max_share") for r in results]
        print(f"  pssl pseudo-label max share per seed: {shares}")


if __name__ == "__main__":
    main()
