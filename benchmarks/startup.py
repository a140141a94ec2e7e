"""Start-up cost of the CLI, as ratios to `import torch`, measured in one run on one machine.

    python benchmarks/startup.py [--repeat 7]

`ptl --help` and `ptl plugins` load every plugin's hook module but no component, so they must
cost a small fraction of importing torch: the bar is `ptl --help` < 1/5 of `import torch`.

Every command runs in a fresh process, the commands take turns (round-robin, so a burst of load
from other programs hits all of them alike), and the best of ``--repeat`` rounds is kept (the
least disturbed). Two measures are printed: wall-clock seconds (what a user waits) and CPU
seconds of the child process (user + system; far less sensitive to other load on a shared
machine). The verdict uses the wall-clock ratio; the exit status is 1 when it misses the bar.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

try:
    import resource
except ImportError:  # pragma: no cover - Windows: wall-clock only
    resource = None  # type: ignore[assignment]

BAR = 0.2  # `ptl --help` must cost less than this fraction of `import torch`


def run_once(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one run of ``cmd``; it must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN) if resource else None
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    if before is None:
        return wall, float("nan")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(commands: dict[str, list[str]], repeat: int) -> dict[str, tuple[float, float]]:
    """Best (wall, CPU) per command over ``repeat`` round-robin rounds."""
    best = {name: (float("inf"), float("inf")) for name in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            wall, cpu = run_once(cmd)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the best of them is kept")
    args = parser.parse_args()
    py = sys.executable
    commands = {
        "python -c 'import torch'": [py, "-c", "import torch"],
        "python -c 'import typer, rich, pluggy'": [py, "-c", "import typer, rich, pluggy"],
        "ptl --help": [py, "-m", "ptl_cli", "--help"],
        "ptl plugins": [py, "-m", "ptl_cli", "plugins"],
        "ptl list": [py, "-m", "ptl_cli", "list"],
    }
    best = measure(commands, args.repeat)
    torch_wall, torch_cpu = best["python -c 'import torch'"]
    print(f"best of {args.repeat} rounds; ratios are to `python -c 'import torch'`")
    print(f"{'command':40s} {'wall s':>8s} {'ratio':>7s} {'CPU s':>8s} {'ratio':>7s}")
    for name, (wall, cpu) in best.items():
        print(f"{name:40s} {wall:8.3f} {wall / torch_wall:7.3f} {cpu:8.3f} {cpu / torch_cpu:7.3f}")
    help_wall, help_cpu = best["ptl --help"]
    ratio = help_wall / torch_wall
    verdict = "meets" if ratio < BAR else "MISSES"
    print(
        f"`ptl --help` costs {ratio:.3f} of `import torch` (CPU: {help_cpu / torch_cpu:.3f}): "
        f"{verdict} the bar of {BAR}"
    )
    raise SystemExit(0 if ratio < BAR else 1)


if __name__ == "__main__":
    main()
