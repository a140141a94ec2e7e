"""Start-up cost of the CLI, as ratios to `import torch`, measured in one run on one machine.

    python benchmarks/startup.py [--repeat 7]

`ptl --help` and `ptl plugins` load every plugin's hook module but no component, so they must
cost a small fraction of importing torch. Each command runs in a fresh process; the best of
``--repeat`` runs is kept (the least disturbed by other load).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time


def best_time(cmd: list[str], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    py = sys.executable
    torch_s = best_time([py, "-c", "import torch"], args.repeat)
    rows = [
        ("python -c 'import torch'", torch_s),
        ("python -c 'import typer, rich, pluggy'", best_time([py, "-c", "import typer, rich, pluggy"], args.repeat)),
        ("ptl --help", best_time([py, "-m", "ptl_cli", "--help"], args.repeat)),
        ("ptl plugins", best_time([py, "-m", "ptl_cli", "plugins"], args.repeat)),
        ("ptl list", best_time([py, "-m", "ptl_cli", "list"], args.repeat)),
    ]
    print(f"{'command':42s} {'seconds':>8s} {'/ import torch':>15s}")
    for name, seconds in rows:
        print(f"{name:42s} {seconds:8.3f} {seconds / torch_s:15.3f}")


if __name__ == "__main__":
    main()
