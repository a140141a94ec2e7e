"""Every GPU figure ptl reports, from one run of under 8 minutes on one GPU, printed as one table.

    python benchmarks/gpu_check.py --json gpu.json [--reference DIR] [--budget 420]
    python benchmarks/gpu_check.py --smoke [--json smoke.json]    # CPU, tiny sizes, < 60 s (CI)

Sections, in the order they run:

``cli``
    The first things a user runs, through the CLI in subprocesses: ``ptl prune --device cuda
    --epochs 1`` and a short ``ptl transfer --device cuda`` (every stage, pseudo pre-training on
    the fly), with their exit status, accuracy and milliseconds per step (metrics, checkpoints
    and logging included); and the prefetcher at depth 0 and 2 under ``TORCH_CUDA_SANITIZER=1``
    (PyTorch's stream sanitizer: a race between its copy stream and the step is an error).
    ``--smoke`` runs the two commands with ``--dry-run`` on the CPU.
``tests``
    The tests that skip without CUDA (found by reading ``tests/`` for ``skipif`` decorators that
    mention CUDA), run with pytest in a subprocess: pass/fail counts.
``sync``
    A few steps of each kind under ``torch.cuda.set_sync_debug_mode("error")``: which of them
    never make the host wait for the GPU (dense, edge-popup and IteRand steps, the IteRand
    re-draw, the prune workflow's whole step with its running metrics, a FixMatch step on a
    batch already on the device).
``prune``
    supermask/dense and IteRand/edge-popup step-time ratios of Conv-6, CIFAR ResNet-18 (batch
    128, 32×32) and torchvision ResNet-50 (batch 64, 224×224) at fp32 and bf16 autocast,
    channels_last off and on, eager. The steps, timers and ratios are ``prune_speed.py``'s.
``reference``
    With ``--reference DIR`` (a checkout of dchiji-ntt/iterand, imported from there): the
    official code's step and re-draw against ptl's, same models, batches and precision.
``fixmatch``
    A P-SSL step (unlabeled images from a PCS pool) against a FixMatch step on real images,
    WRN-28-2, B = 64, μ = 7, with ``transfer_pssl_step.py``'s arms and steps.
``pool``
    PP and PCS pool generation (``Pool.build`` with ``ptl_transfer.pcs``'s shard makers) against
    bare ``generator.sample`` batches, images/s, on a full-size BigGAN-deep-256 and DiT-XL/2
    (with the Stable Diffusion VAE, bf16) built from their configs with random weights.
``compile``
    The ``prune`` cases with ``torch.compile``, the most useful first (bf16 + channels_last),
    as long as the budget lasts.

Every row is time-boxed and records the peak GPU memory of its work. A row that would overrun
the global budget (``--budget`` seconds from the start) is reported as skipped, a row that fails
shows its one-line error, and the rest goes on, so the table always comes out. ``--json OUT``
writes the rows too (after every row: an interrupted run leaves what it had).

On a bare checkout (the lent GPU machine has no ``pip install`` of ptl) the script puts the
repository on ``sys.path`` and, when no ``ptl`` distribution is installed, declares the built-in
plugins' entry points from ``pyproject.toml`` in a temporary directory.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import gc
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
K_PER = 300  # IteRand's re-draw interval (the papers' default), for the amortized step
MODEL_LABELS = {"conv6": "Conv-6", "resnet18": "ResNet-18 (CIFAR)", "torchvision:resnet50": "ResNet-50 (tv)"}


# -- a bare checkout ---------------------------------------------------------------------------------
def make_importable() -> Path | None:
    """The checkout's packages first on ``sys.path``; entry points declared if ptl is not installed.

    Returns the temporary site directory that declares them (for subprocesses), or None.
    """
    for path in (ROOT / "benchmarks", ROOT / "plugins", ROOT):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    from importlib.metadata import entry_points

    if list(entry_points(group="ptl")):
        return None
    lines = (ROOT / "pyproject.toml").read_text().splitlines()
    start = lines.index("[project.entry-points.ptl]") + 1
    table = []
    for line in lines[start:]:
        if line.startswith("["):
            break
        if "=" in line:
            name, value = (part.strip().strip('"') for part in line.split("=", 1))
            table.append(f"{name} = {value}\n")
    site = scratch("site")
    info = site / "ptl-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ptl\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[ptl]\n" + "".join(table))
    sys.path.insert(0, str(site))
    return site


def scratch(what: str) -> Path:
    """A temporary directory removed when the script exits."""
    path = Path(tempfile.mkdtemp(prefix=f"ptl-gpu-check-{what}-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# -- rows, the budget and time boxes ------------------------------------------------------------------
@dataclass
class Row:
    section: str
    case: str
    status: str  # ok | error | skipped
    result: str
    values: dict[str, Any] = field(default_factory=dict)
    peak_mib: float | None = None
    seconds: float = 0.0


class Overrun(Exception):
    """Raised by :func:`time_box` when a row runs past its time."""


@contextlib.contextmanager
def time_box(seconds: float) -> Iterator[None]:
    """Interrupt the block (with :class:`Overrun`) after ``seconds``, through SIGALRM."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise Overrun(f"over its {seconds:.0f} s time box")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Check:
    """The run: its rows, its budget, the device, and how each row is run and recorded."""

    def __init__(self, args: argparse.Namespace, device: Any, sizes: Any) -> None:
        self.args = args
        self.device = device
        self.cuda = device.type == "cuda"
        self.sizes = sizes
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.rows: list[Row] = []
        self.meta: dict[str, Any] = {}
        self.box_end = math.inf

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def until(self) -> float:
        """When timing loops of the current row should stop adding rounds (a margin before its box)."""
        return min(self.box_end, self.deadline) - 2.0

    def skip(self, section: str, case: str, reason: str) -> None:
        self.add(Row(section, case, "skipped", f"skipped ({reason})"))

    def run(
        self, section: str, case: str, fn: Callable[[], tuple[str, dict[str, Any]]], estimate: float
    ) -> None:
        """Run one row: skipped when ``estimate`` seconds are not left, boxed to 3× that (at most
        what is left); an exception becomes the row's one-line error."""
        left = self.left()
        if left < estimate:
            return self.skip(
                section, case, f"time budget: needs ~{estimate:.0f} s, {max(left, 0):.0f} s left"
            )
        import torch

        if self.cuda:
            with contextlib.suppress(Exception):  # a broken context shows in the row itself
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
        box = min(3 * estimate, left)
        began = time.monotonic()
        self.box_end = began + box
        try:
            with time_box(box):
                result, values = fn()
            row = Row(section, case, "ok", result, values)
        except (Overrun, Skip) as exc:
            row = Row(section, case, "skipped", f"skipped ({exc})")
        except Exception as exc:  # noqa: BLE001 - one row's failure must not stop the others
            row = Row(section, case, "error", one_line(exc))
        finally:
            self.box_end = math.inf
        row.seconds = round(time.monotonic() - began, 1)
        if self.cuda:
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
                row.peak_mib = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        gc.collect()
        if self.cuda:
            with contextlib.suppress(Exception):
                torch.cuda.empty_cache()
        self.add(row)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:5.0f} s] {row.section} | {row.case} | {row.result}", file=sys.stderr, flush=True)
        self.write_json()

    def write_json(self) -> None:
        if self.args.json:
            data = {"meta": self.meta, "rows": [asdict(r) for r in self.rows]}
            Path(self.args.json).write_text(json.dumps(data, indent=1, default=str) + "\n")


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), with where in ptl it happened."""
    message = (str(exc).strip().splitlines() or [""])[0]
    text = f"error: {type(exc).__name__}: {message}"[:200]
    where = ptl_frame(exc)
    return f"{text} (at {where})" if where else text


def ptl_frame(exc: BaseException) -> str:
    """``path:line`` of the innermost traceback frame in this repository, if any."""
    found = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if ROOT in path.parents and path.name != "gpu_check.py":
            found = f"{path.relative_to(ROOT)}:{frame.lineno}"
    return found


# -- sizes ---------------------------------------------------------------------------------------------
def sizes_for(smoke: bool) -> SimpleNamespace:
    """Workloads: the full ones for a GPU, tiny ones for ``--smoke`` (every code path, seconds on a CPU)."""
    if smoke:
        return SimpleNamespace(
            models={"conv6": (4, 32), "resnet18": (4, 32), "torchvision:resnet50": (2, 64)},
            reps=1,
            call_seconds=0.0,
            redraw_reps=1,
            sync_model=("conv6", 4, 32),
            sync_steps=1,
            fixmatch=dict(arch="conv2", width=0.5, batch=4, mu=2, steps=1, per_image=2, sync_batch=4),
            biggan=dict(width=4, samples=8, shard=4, batch=4, repeats=1, targets=2, target_size=32),
            dit=dict(tiny=True, steps=2, samples=4, shard=2, batch=2, repeats=1),
            estimates={"conv6": 5, "resnet18": 10, "torchvision:resnet50": 20},
            compile_estimates={},
        )
    return SimpleNamespace(
        models={"conv6": (128, 32), "resnet18": (128, 32), "torchvision:resnet50": (64, 224)},
        reps=15,
        call_seconds=0.02,  # one timed call runs as many steps as take about this long
        redraw_reps=3,
        sync_model=("resnet18", 32, 32),
        sync_steps=3,
        fixmatch=dict(arch="wrn28", width=1.0, batch=64, mu=7, steps=20, per_image=40, sync_batch=16),
        biggan=dict(width=None, samples=1024, shard=512, batch=128, repeats=2, targets=32, target_size=224),
        dit=dict(tiny=False, steps=25, samples=128, shard=64, batch=64, repeats=2),
        estimates={"conv6": 6, "resnet18": 10, "torchvision:resnet50": 20},
        compile_estimates={"conv6": 45, "resnet18": 60, "torchvision:resnet50": 110},
    )


PRECISIONS = ("fp32", "bf16-mixed")


def variant(precision: str, channels_last: bool, compiled: bool = False) -> str:
    name = {"fp32": "fp32", "bf16-mixed": "bf16"}[precision]
    return name + (" channels_last" if channels_last else "") + (" compile" if compiled else "")


# -- tests ---------------------------------------------------------------------------------------------
def cuda_only_tests(root: Path = ROOT) -> list[str]:
    """Node ids of tests whose ``skipif`` (decorator or module ``pytestmark``) mentions CUDA."""
    ids = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        text = path.read_text()
        if "cuda" not in text:
            continue
        rel = path.relative_to(root).as_posix()
        tree = ast.parse(text)
        marks = [n for n in tree.body if isinstance(n, ast.Assign) and _is_pytestmark(n)]
        if any(_mentions_cuda_skip(ast.get_source_segment(text, n)) for n in marks):
            ids.append(rel)
            continue
        for node, prefix in _test_functions(tree, rel):
            if any(_mentions_cuda_skip(ast.get_source_segment(text, d)) for d in node.decorator_list):
                ids.append(f"{prefix}::{node.name}")
    return ids


def _is_pytestmark(node: ast.Assign) -> bool:
    return any(getattr(t, "id", "") == "pytestmark" for t in node.targets)


def _mentions_cuda_skip(source: str | None) -> bool:
    """``skipif(not ...cuda...)``: skipped where there is no CUDA (not the reverse)."""
    return re.search(r"skipif\(\s*not\b[^,]*cuda", source or "", re.IGNORECASE) is not None


def _test_functions(tree: ast.Module, rel: str) -> Iterator[tuple[ast.FunctionDef, str]]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            yield node, rel
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    yield item, f"{rel}::{node.name}"


def pytest_counts(output: str) -> dict[str, int]:
    """``{"passed": n, "failed": n, ...}`` from pytest's closing line."""
    counts: dict[str, int] = {}
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    for number, word in re.findall(
        r"(\d+) (passed|failed|skipped|errors?|deselected)", lines[-1] if lines else ""
    ):
        counts["error" if word.startswith("error") else word] = int(number)
    return counts


def tests_row(check: Check, site: Path | None) -> tuple[str, dict[str, Any]]:
    ids = cuda_only_tests()
    if not ids:
        return "no CUDA-only tests found", {"tests": []}
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in (site, ROOT, ROOT / "plugins") if p] + [env.get("PYTHONPATH", "")]
    )
    collect = [] if check.cuda else ["--collect-only"]
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rfEs", *collect, *ids]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=max(5.0, check.until() - time.monotonic()),
    )
    output = proc.stdout + proc.stderr
    names = [i.split("::")[-1] for i in ids]
    if not check.cuda:
        found = sum(1 for line in proc.stdout.splitlines() if "::" in line)
        if proc.returncode != 0 or found != len(ids):
            raise RuntimeError(f"pytest --collect-only exit {proc.returncode}: {output.strip()[-300:]}")
        raise Skip(f"no CUDA: {len(ids)} CUDA-only tests found and collected: {', '.join(names)}")
    counts = pytest_counts(output)
    failed = [line.split(" ")[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    text = ", ".join(f"{n} {w}" for w, n in counts.items()) or f"pytest exit {proc.returncode}"
    if failed:
        text += ": " + ", ".join(f.split("::")[-1] for f in failed)
    return text + f" ({', '.join(names)})", {**counts, "tests": ids, "exit": proc.returncode}


class Skip(Exception):
    """A row that cannot run here; its message is the reason."""


# -- prune: steps, timing, ratios ------------------------------------------------------------------
def batch_on(device: Any, batch: int, size: int, channels_last: bool):
    from prune_speed import real_batch

    from ptl_cli.engine.compute import to_device

    x, y = real_batch(batch, size)
    return to_device(x, device, channels_last), y.to(device)


def prune_steps(
    model: str, batch: int, size: int, precision: str, channels_last: bool, compiled: bool, device: Any
) -> tuple[dict[str, Callable[[], None]], Callable[[], None], Any]:
    """ptl's dense, edge-popup and IteRand steps (``prune_speed.ptl_step``) and the IteRand re-draw."""
    from prune_speed import ptl_step

    from ptl_cli.engine.device import Precision

    x, y = batch_on(device, batch, size, channels_last)
    compute = SimpleNamespace(channels_last=channels_last, compile=compiled)
    policy = Precision(precision, device)
    steps, redraw = {}, None
    for method in ("sgd", "edge-popup", "iterand"):
        step, method_redraw, _ = ptl_step(model, method, x, y, compute, policy)
        steps[method] = step
        if method == "iterand":
            redraw = method_redraw
    return steps, redraw, policy


def repeat(fn: Callable[[], None], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            fn()

    return run


def time_steps(
    check: Check, steps: dict[str, Callable[[], None]], redraws: dict[str, Callable[[], None]], warmup: int
) -> tuple[dict[str, list[float]], int]:
    """Per-step seconds of interleaved rounds (``prune_speed.interleaved``), each timed call running
    ``inner`` steps so that a GPU call is long against the clock's synchronization; re-draws alone."""
    from prune_speed import CLOCKS, interleaved, timed

    clock = CLOCKS["cuda" if check.cuda else "wall"]
    for _ in range(warmup):  # compilation, allocator, cuDNN's plans
        for fn in steps.values():
            fn()
    inner = 1
    if check.sizes.call_seconds:
        slowest = max(timed(fn, clock) for fn in steps.values())
        inner = max(1, min(20, round(check.sizes.call_seconds / max(slowest, 1e-6))))
    timed_steps = interleaved(
        {k: repeat(fn, inner) for k, fn in steps.items()}, check.sizes.reps, clock, 0, check.until()
    )
    times = {k: [t / inner for t in v] for k, v in timed_steps.items()}
    times.update(interleaved(redraws, check.sizes.redraw_reps, clock, 0, check.until()))
    return times, inner


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def prune_row(
    check: Check, model: str, precision: str, channels_last: bool, compiled: bool
) -> tuple[str, dict[str, Any]]:
    from prune_speed import iqr, summary

    batch, size = check.sizes.models[model]
    steps, redraw, _ = prune_steps(model, batch, size, precision, channels_last, compiled, check.device)
    times, inner = time_steps(check, steps, {"iterand re-draw": redraw}, warmup=2 if compiled else 1)
    s = summary(times, K_PER)
    spread = {k: iqr(v) / statistics.median(v) for k, v in times.items()}
    values = {
        "batch": batch,
        "image_size": size,
        "steps_timed": len(times["sgd"]) * inner,
        "dense_ms": s["sgd"] * 1e3,
        "edge_popup_ms": s["edge-popup"] * 1e3,
        "iterand_ms": s["iterand"] * 1e3,
        "redraw_ms": s["iterand re-draw"] * 1e3,
        "supermask_over_dense": s["supermask / dense"],
        "iterand_over_edge_popup": s["iterand / edge-popup"],
        "relative_iqr": spread,
    }
    result = (
        f"supermask/dense {s['supermask / dense']:.3f}, IteRand/edge-popup {s['iterand / edge-popup']:.3f} "
        f"(dense {ms(s['sgd'])} ±{spread['sgd']:.0%}, edge-popup {ms(s['edge-popup'])} "
        f"±{spread['edge-popup']:.0%}, re-draw {ms(s['iterand re-draw'])}; batch {batch}, "
        f"{values['steps_timed']} steps each)"
    )
    return result, values


def reference_row(check: Check, model: str, precision: str) -> tuple[str, dict[str, Any]]:
    from prune_speed import reference_step

    batch, size = check.sizes.models[model]
    steps, redraw, policy = prune_steps(model, batch, size, precision, False, False, check.device)
    x, y = batch_on(check.device, batch, size, False)
    ref_step, ref_redraw = reference_step(check.args.reference, model, x, y, policy)
    times, inner = time_steps(
        check,
        {"edge-popup": steps["edge-popup"], "reference": ref_step},
        {"iterand re-draw": redraw, "reference re-draw": ref_redraw},
        warmup=1,
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    step_ratio = med["reference"] / med["edge-popup"]
    redraw_ratio = med["reference re-draw"] / med["iterand re-draw"]
    values = {
        "official_over_ptl_step": step_ratio,
        "official_over_ptl_redraw": redraw_ratio,
        "ptl_ms": med["edge-popup"] * 1e3,
        "official_ms": med["reference"] * 1e3,
        "ptl_redraw_ms": med["iterand re-draw"] * 1e3,
        "official_redraw_ms": med["reference re-draw"] * 1e3,
        "steps_timed": len(times["reference"]) * inner,
    }
    result = (
        f"official/ptl step {step_ratio:.3f} ({ms(med['reference'])} vs {ms(med['edge-popup'])}), "
        f"re-draw {redraw_ratio:.2f} ({ms(med['reference re-draw'])} vs {ms(med['iterand re-draw'])})"
    )
    return result, values


# -- the CLI on the device ------------------------------------------------------------------------
def cli_env(site: Path | None) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(p) for p in (site, ROOT, ROOT / "plugins") if p] + [env.get("PYTHONPATH", "")]
    )
    return env


CLI_RUNS = {
    "ptl prune --method iterand --device cuda --epochs 1": [
        "prune", "--method", "iterand", "--epochs", "1", "--set", "pruner.params.rerand_freq=20",
    ],
    "ptl transfer --device cuda (every stage, short, PP on the fly)": [
        "transfer", "--set", "pp.mode=on-the-fly", "--set", "pp.train.steps=60", "--set", "train.steps=60",
        "--set", "pcs.per_image=2", "--set", "pp.samples=256", "--set", "stage_processes=1",
    ],
}  # fmt: skip


def cli_row(check: Check, site: Path | None, args: list[str]) -> tuple[str, dict[str, Any]]:
    """One CLI run in a subprocess: exit status, test accuracy, steps and ms per step."""
    out = scratch("cli") / "run"
    device = ["--device", "cuda"] if check.cuda else ["--device", "cpu", "--dry-run"]
    env = {**cli_env(site), "PTL_CACHE_DIR": str(scratch("cache")), "PTL_RUNS_DIR": str(scratch("runs"))}
    cmd = [sys.executable, "-m", "ptl_cli", *args, *device, "--out", str(out), "--json"]
    began = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(5.0, check.until() - began)
    )
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
    if not check.cuda:
        return f"--dry-run exit 0 in {seconds:.1f} s", {"exit": 0, "seconds": round(seconds, 1)}
    metrics = json.loads((out / "run.json").read_text()).get("metrics", {})
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = sum(max((r.get("step", 0) for r in records if r.get("stage") == s), default=0) for s in
                {r.get("stage") for r in records if "loss" in r})  # fmt: skip
    accuracy = {k: v for k, v in metrics.items() if k.endswith("test_acc")}
    values = {"exit": 0, "seconds": round(seconds, 1), "steps": steps, **accuracy}
    values["ms_per_step"] = round(1e3 * seconds / max(steps, 1), 2)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items())
    per_step = f"{values['ms_per_step']} ms/step with setup"
    return f"exit 0 in {seconds:.0f} s, {steps} steps ({per_step}), {shown}", values


SANITIZED_PREFETCH = """
import torch
from ptl_cli.data.loader import Prefetcher
source = [(torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8), torch.arange(64)) for _ in range(6)]
net = torch.nn.Conv2d(3, 8, 3).cuda()
for depth in (0, 2):
    with Prefetcher(source, "cuda", depth) as batches:
        for images, labels in batches:
            net(images.float()).sum().backward()
torch.cuda.synchronize()
print("ok")
"""


def sanitizer_row(check: Check, site: Path | None) -> tuple[str, dict[str, Any]]:
    if not check.cuda:
        raise Skip("no CUDA: the stream sanitizer checks CUDA streams")
    env = {**cli_env(site), "TORCH_CUDA_SANITIZER": "1"}
    cmd = [sys.executable, "-c", SANITIZED_PREFETCH]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if "CSAN" in line or "data race" in line.lower()]
    if proc.returncode != 0 or errors:
        first = (errors or proc.stderr.strip().splitlines() or [""])[0]
        raise RuntimeError(f"exit {proc.returncode}: {first}")
    return "no race (depth 0 and 2, 6 batches each)", {"exit": 0, "races": 0}


# -- host synchronization ---------------------------------------------------------------------------
def sync_cases(check: Check) -> dict[str, Callable[[], None]]:
    """The prune steps whose host synchronizations are checked (bf16 + channels_last on CUDA)."""
    model, batch, size = check.sizes.sync_model
    steps, redraw, _ = prune_steps(model, batch, size, "bf16-mixed", True, False, check.device)
    label = f"{MODEL_LABELS[model]}, bf16 channels_last"
    return {
        f"dense step ({label})": steps["sgd"],
        f"edge-popup step ({label})": steps["edge-popup"],
        f"IteRand step ({label})": steps["iterand"],
        f"IteRand re-draw ({label})": redraw,
        f"prune workflow step with its metrics ({label})": workflow_step(check, model, batch, size),
    }


def workflow_step(check: Check, model: str, batch: int, size: int) -> Callable[[], None]:
    """What ``ptl prune``'s loop does per step: augmentation, ``train_step`` (with
    ``after_step``) and the running metrics (:func:`ptl_prune.workflow.add_step_metrics`)."""
    import torch

    from ptl_cli import pruning
    from ptl_cli.data import augment
    from ptl_cli.engine.compute import optimizer_options
    from ptl_cli.engine.device import Precision
    from ptl_prune.build import build_pruner
    from ptl_prune.workflow import add_step_metrics

    x, y = batch_on(check.device, batch, size, True)
    pruner = build_pruner({"method": "iterand", "sparsity": 0.5, "rerand_freq": 3})
    net = pruning.prepare(pruner, plugins_model(model, size), 0).to(check.device)
    net = net.to(memory_format=torch.channels_last) if check.cuda else net
    optimizer = torch.optim.SGD(
        pruner.trainable_parameters(net), lr=0.1, momentum=0.9, **optimizer_options(check.device)
    )
    precision = Precision("bf16-mixed", check.device)
    sums = torch.zeros(3, dtype=torch.float64, device=check.device)
    count = [0]

    def step() -> None:
        count[0] += 1
        images = augment.weak(x)
        loss, logits = pruning.train_step(pruner, net, optimizer, images, y, count[0], precision=precision)
        add_step_metrics(sums, loss, logits, y)

    return step


def plugins_model(name: str, size: int) -> Any:
    from ptl_cli import plugins

    return plugins.get("models", name).build(10, 3, size, 1.0)


def fixmatch_sync_step(check: Check) -> Callable[[], None]:
    """A FixMatch training step on a batch fetched once to the device (the loop's prefetcher
    fetches in the background: what must not wait for the GPU is the step itself)."""
    arm, fetch = fixmatch_arm(check, "real", batch=check.sizes.fixmatch["sync_batch"])
    return lambda: train_batch(arm, fetch)


def sync_row(check: Check, fn: Callable[[], None]) -> tuple[str, dict[str, Any]]:
    """Run ``fn`` a few times under ``set_sync_debug_mode("error")`` (after one warm-up call)."""
    import torch

    fn()
    n = check.sizes.sync_steps
    if not check.cuda:
        for _ in range(n):
            fn()
        raise Skip(f"no CUDA: the step ran {n + 1}× on the CPU; the check needs a CUDA device")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(n):
            fn()
    except RuntimeError as exc:
        if "synchroniz" not in str(exc):
            raise
        torch.cuda.set_sync_debug_mode(0)
        where = ptl_frame(exc) or "outside ptl"
        return f"SYNCS: a synchronizing CUDA call at {where}", {"sync_free": False, "where": where}
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return f"sync-free: {n} calls under set_sync_debug_mode('error')", {"sync_free": True, "calls": n}


# -- FixMatch / P-SSL ------------------------------------------------------------------------------
_FIXMATCH: dict[str, Any] = {}


def fixmatch_setup(check: Check) -> dict[str, Any]:
    """The target set, the bundled BigGAN's PCS pool of it on the device (made once, cached)."""
    if not _FIXMATCH:
        from transfer_pssl_step import pcs_pool, target_set

        from ptl_cli import plugins

        t = target_set()
        device = str(check.device)
        generator = plugins.get("generators", "biggan").build(device)
        classifier = plugins.get("classifiers", "bundled").build(device)
        tmp = scratch("pool")
        per_image = check.sizes.fixmatch["per_image"]
        data, seconds = pcs_pool(Path(tmp), generator, classifier, t["images"], per_image, device)
        _FIXMATCH.update(t, pool=data, pool_seconds=seconds)
    return _FIXMATCH


def fixmatch_arm(check: Check, source: str, batch: int | None = None) -> tuple[dict, Callable[[int], Any]]:
    """An arm (``transfer_pssl_step.make_arm``) fed by the pool or by real images, and its batch fetcher."""
    from transfer_pssl_step import fetch_batch, make_arm

    s, f = fixmatch_setup(check), check.sizes.fixmatch
    batch = batch or f["batch"]
    if source == "pool":
        count, fetch = len(s["pool"]), lambda idx: s["pool"].gather(idx)["images"]
    else:
        count, fetch = len(s["pack"].images), lambda idx: s["pack"].images[idx]
    arm = make_arm(f["arch"], f["width"], count, len(s["images"]), batch, f["mu"], fetch, check.device)
    arm["step_index"] = 0
    return arm, lambda i: fetch_batch(arm, i, s["images"], s["labels"])


def train_batch(arm: dict, fetch: Callable[[int], Any], precision: Any = None) -> None:
    """One training step on step 0's batch, fetched once: the part of a step that runs on the device."""
    from transfer_pssl_step import train_on

    s = _FIXMATCH
    if "batch" not in arm:
        arm["batch"] = fetch(0)
    arm["step_index"] += 1
    train_on(arm, arm["step_index"], *arm["batch"], s["mean"], s["std"], precision)


def fixmatch_row(check: Check, precision: str) -> tuple[str, dict[str, Any]]:
    from prune_speed import CLOCKS
    from transfer_pssl_step import step

    from ptl_cli.engine.device import Precision

    s, f = fixmatch_setup(check), check.sizes.fixmatch
    clock = CLOCKS["cuda" if check.cuda else "wall"]
    policy = Precision(precision, check.device)
    arms = {name: fixmatch_arm(check, name)[0] for name in ("pool", "real")}
    warm = 2
    for i in range(warm + f["steps"]):
        if i > warm and time.monotonic() > check.until():
            break
        for name in ("pool", "real") if i % 2 == 0 else ("real", "pool"):
            seconds = step(arms[name], i, s["images"], s["labels"], s["mean"], s["std"], clock, policy)
            if i >= warm:
                arms[name]["times"].append(seconds)
    med = {name: statistics.median(arm["times"]) for name, arm in arms.items()}
    ratio = med["pool"] / med["real"]
    images = f["batch"] * (1 + 2 * f["mu"])
    values = {
        "pssl_ms": med["pool"] * 1e3,
        "fixmatch_ms": med["real"] * 1e3,
        "pssl_over_fixmatch": ratio,
        "images_per_step": images,
        "steps_timed": len(arms["pool"]["times"]),
        "pool_build_s": s["pool_seconds"],
    }
    result = (
        f"P-SSL {ms(med['pool'])}, FixMatch {ms(med['real'])} per step, ratio {ratio:.3f} "
        f"({f['arch']} B={f['batch']} μ={f['mu']}, {images} images/step, batch fetch included)"
    )
    return result, values


# -- pools ---------------------------------------------------------------------------------------------
def random_biggan(device: Any, width: int | None) -> Any:
    """BigGAN-deep-256 from its config with random weights (``width``: a thinner one for smoke runs)."""
    import torch

    from ptl_generators.biggan import BigGAN, BigGANConfig
    from ptl_generators.biggan_generator import BigGANGenerator
    from ptl_generators.conditioning import default_class_names

    config = BigGANConfig.deep(256)
    if width:
        config.channel_width = width
    with torch.device(device):
        net = BigGAN(config)
    names = default_class_names(config.num_classes)
    return BigGANGenerator(net, torch.device(device), 1.0, names, "random BigGAN-deep-256", "random")


def random_dit(device: Any, tiny: bool, steps: int) -> Any:
    """DiT-XL/2 (256×256) and the SD VAE from their configs, random weights, bf16, DDIM with CFG."""
    import torch
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    from ptl_generators.conditioning import default_class_names
    from ptl_generators.diffusion import DEFAULT_SCHEDULER, DiffusionGenerator

    # facebook/DiT-XL-2-256's transformer config; stabilityai/sd-vae-ft-ema's VAE config
    dit = dict(num_attention_heads=16, attention_head_dim=72, num_layers=28, sample_size=32, out_channels=8)
    vae = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=256)
    if tiny:
        dit = dict(num_attention_heads=2, attention_head_dim=8, num_layers=2, sample_size=8, out_channels=8)
        vae = dict(block_out_channels=(8, 8), layers_per_block=1, sample_size=16, norm_num_groups=4)
    blocks = len(vae["block_out_channels"])
    vae.update(
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks
    )
    with torch.device(device):
        model = DiTTransformer2DModel(in_channels=4, patch_size=2, num_embeds_ada_norm=1000, **dit)
        decoder = AutoencoderKL(latent_channels=4, **vae)
    side = dit["sample_size"]
    return DiffusionGenerator(
        model,
        "dit",
        DEFAULT_SCHEDULER,
        1000,
        1000,
        default_class_names(1000),
        (4, side, side),
        torch.device(device),
        steps,
        2.0,
        0.0,
        torch.bfloat16 if device.type == "cuda" else torch.float32,
        "random",
        vae=decoder,
        channels=3,
        image_size=side * 2 ** (blocks - 1),
    )


_GENERATORS: dict[str, Any] = {}


def pool_row(check: Check, which: str, kind: str) -> tuple[str, dict[str, Any]]:
    """Pool generation vs bare ``generator.sample`` (``transfer_pool_speed.pool_vs_raw``)."""
    import torch
    from prune_speed import CLOCKS
    from transfer_pool_speed import pool_vs_raw

    cfg = check.sizes.biggan if which == "biggan" else check.sizes.dit
    if which not in _GENERATORS:
        _GENERATORS.clear()  # one full-size generator in memory at a time
        gc.collect()
        if which == "biggan":
            _GENERATORS[which] = random_biggan(check.device, cfg["width"])
        else:
            _GENERATORS[which] = random_dit(check.device, cfg["tiny"], cfg["steps"])
    g = _GENERATORS[which]
    classifier = targets = None
    if kind == "pcs":
        from torchvision.models import resnet18
        from transfer_pssl_step import target_set

        with torch.device(check.device):
            classifier = resnet18(num_classes=g.num_classes).eval()
        side = cfg["target_size"]
        images = target_set()["images"][: cfg["targets"]].float()
        targets = torch.nn.functional.interpolate(images, size=side, mode="bilinear").repeat(1, 3, 1, 1)
        targets = targets.round().clamp(0, 255).to(torch.uint8)
    g.sample(torch.zeros(cfg["batch"], dtype=torch.long))  # warm-up
    clock = CLOCKS["cuda" if check.cuda else "wall"]
    raw, pooled = pool_vs_raw(
        g,
        cfg["samples"],
        cfg["shard"],
        cfg["batch"],
        cfg["repeats"],
        check.device,
        clock,
        classifier,
        targets,
    )
    best_raw, best_pool = min(raw), min(pooled)
    n = cfg["samples"]
    values = {
        "raw_images_per_s": n / best_raw,
        "pool_images_per_s": n / best_pool,
        "pool_over_raw_throughput": best_raw / best_pool,
        "samples": n,
        "batch": cfg["batch"],
        "image_size": g.image_size,
    }
    dtype = str(getattr(g, "dtype", torch.float32)).replace("torch.", "")
    extra = f", {cfg['steps']} DDIM steps with CFG" if which == "dit" else ""
    extra += f", {dtype}"
    result = (
        f"pool {n / best_pool:.1f} vs bare {n / best_raw:.1f} images/s: {best_raw / best_pool:.3f} "
        f"of a bare forward ({n} samples at {g.image_size}², batch {cfg['batch']}{extra}; best of {len(raw)})"
    )
    return result, values


# -- the run -------------------------------------------------------------------------------------------
def describe(check: Check) -> dict[str, Any]:
    import torch

    meta: dict[str, Any] = {
        "torch": torch.__version__,
        "device": str(check.device),
        "smoke": check.args.smoke,
        "budget_s": check.args.budget,
        "deterministic": not check.args.fast_kernels,
    }
    if check.cuda:
        props = torch.cuda.get_device_properties(check.device)
        meta.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            cudnn=torch.backends.cudnn.version(),
        )
    with contextlib.suppress(Exception):
        meta["commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return meta


def run_all(check: Check, site: Path | None) -> None:
    s, cuda, only = check.sizes, check.cuda, set(check.args.only or [])

    def wanted(section: str) -> bool:
        return not only or section in only

    if wanted("cli"):
        for case, args in CLI_RUNS.items():
            check.run("cli", case, lambda a=args: cli_row(check, site, a), 90 if cuda else 10)
        check.run("cli", "prefetcher under TORCH_CUDA_SANITIZER=1", lambda: sanitizer_row(check, site), 30)
    if wanted("tests"):
        check.run("tests", "CUDA-only tests", lambda: tests_row(check, site), 40)
    if wanted("sync"):
        cases: dict[str, Callable[[], Callable[[], None]]] = {}  # name -> builds the step

        def build() -> tuple[str, dict[str, Any]]:
            cases.update({name: (lambda fn=fn: fn) for name, fn in sync_cases(check).items()})
            return f"{len(cases)} prune steps built", {"steps": len(cases), "names": list(cases)}

        check.run("sync", "setup (prune models)", build, 20)
        f = s.fixmatch
        name = f"FixMatch step, batch on the device ({f['arch']} B={f['sync_batch']} μ={f['mu']}, fp32)"
        cases[name] = lambda: fixmatch_sync_step(check)
        for name, make in cases.items():
            check.run("sync", name, lambda make=make: sync_row(check, make()), 10)
        cases.clear()
    variants = [(p, cl) for p in PRECISIONS for cl in (False, True)]
    if wanted("prune"):
        for model in s.models:
            for precision, cl in variants:
                case = f"{MODEL_LABELS[model]} {variant(precision, cl)}"
                if not cuda and (precision != "fp32" or cl):
                    check.skip("prune", case, "no CUDA")
                    continue
                check.run(
                    "prune",
                    case,
                    lambda m=model, p=precision, c=cl: prune_row(check, m, p, c, False),
                    s.estimates[model],
                )
    if wanted("reference"):
        for model in s.models:
            for precision in PRECISIONS:
                case = f"{MODEL_LABELS[model]} {variant(precision, False)}: official vs ptl"
                if not check.args.reference:
                    check.skip("reference", case, "no --reference checkout given")
                elif not cuda and precision != "fp32":
                    check.skip("reference", case, "no CUDA")
                else:
                    check.run(
                        "reference",
                        case,
                        lambda m=model, p=precision: reference_row(check, m, p),
                        s.estimates[model],
                    )
    if wanted("fixmatch"):
        for precision in PRECISIONS:
            case = f"P-SSL vs FixMatch step, {variant(precision, False)}"
            if not cuda and precision != "fp32":
                check.skip("fixmatch", case, "no CUDA")
            else:
                check.run("fixmatch", case, lambda p=precision: fixmatch_row(check, p), 25)
    if wanted("pool"):
        for which, kind, label, estimate in (
            ("biggan", "pp", "BigGAN-deep-256 PP pool", 20),
            ("biggan", "pcs", "BigGAN-deep-256 PCS pool", 20),
            ("dit", "pp", "DiT-XL/2 PP pool", 45),
        ):
            check.run("pool", label, lambda w=which, k=kind: pool_row(check, w, k), estimate)
        _GENERATORS.clear()
    if wanted("compile"):
        order = [("bf16-mixed", True), ("fp32", False), ("bf16-mixed", False), ("fp32", True)]
        for precision, cl in order:
            for model in s.models:
                case = f"{MODEL_LABELS[model]} {variant(precision, cl, True)}"
                if not cuda:
                    check.skip("compile", case, "no CUDA")
                elif check.args.smoke:
                    check.skip("compile", case, "--smoke: no compile")
                else:
                    estimate = s.compile_estimates[model]
                    check.run(
                        "compile", case, lambda m=model, p=precision, c=cl: compiled(check, m, p, c), estimate
                    )


def compiled(check: Check, model: str, precision: str, channels_last: bool) -> tuple[str, dict[str, Any]]:
    """A ``prune`` case with ``torch.compile``, with dynamo's count of graphs and graph breaks
    (one graph per model, no breaks, is what the accelerator selection path allows)."""
    import torch

    counters = torch._dynamo.utils.counters
    counters.clear()
    try:
        result, values = prune_row(check, model, precision, channels_last, True)
        breaks, graphs = sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]
        values.update(graph_breaks=breaks, graphs=graphs)
        return f"{result}; {graphs} graphs for 3 models, {breaks} graph breaks", values
    finally:
        torch._dynamo.reset()


def table(rows: list[Row]) -> str:
    """The rows as one plain-text table (section, case, result, peak GPU memory, seconds)."""
    head = ("section", "case", "result", "peak MiB", "s")
    cells = [
        (r.section, r.case, r.result, "-" if r.peak_mib is None else f"{r.peak_mib:,.0f}", f"{r.seconds:.0f}")
        for r in rows
    ]
    widths = [max(len(head[i]), *(len(c[i]) for c in cells)) for i in range(2)]
    lines = [f"{head[0]:<{widths[0]}}  {head[1]:<{widths[1]}}  {head[3]:>8}  {head[4]:>4}  {head[2]}"]
    lines.append("-" * len(lines[0]))
    for c in cells:
        lines.append(f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[3]:>8}  {c[4]:>4}  {c[2]}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="OUT", help="also write the rows to this JSON file")
    parser.add_argument("--reference", metavar="DIR", help="checkout of dchiji-ntt/iterand to compare with")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for all rows (default 420)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, no compile: every code path, on a CPU"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["cli", "tests", "sync", "prune", "reference", "fixmatch", "pool", "compile"],
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--fast-kernels",
        action="store_true",
        help="cudnn.benchmark, non-deterministic kernels (default: ptl's default, deterministic)",
    )
    args = parser.parse_args(argv)
    if args.reference and not (Path(args.reference) / "models" / "networks" / "sparse_modules.py").is_file():
        parser.exit(2, f"error: --reference {args.reference}: not a checkout of dchiji-ntt/iterand\n")
    if args.budget <= 0:
        parser.exit(2, "error: --budget must be positive\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    site = make_importable()
    import torch

    from ptl_cli.engine.device import with_index
    from ptl_cli.engine.seeding import seed_everything

    if not torch.cuda.is_available() and not args.smoke:
        print("error: no CUDA device here; run with --smoke for the CPU smoke test", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    seed_everything(0, deterministic=not args.fast_kernels)
    device = with_index("cuda" if torch.cuda.is_available() else "cpu")
    check = Check(args, device, sizes_for(args.smoke))
    check.meta = describe(check)
    print(
        "gpu_check: " + ", ".join(f"{k} {v}" for k, v in check.meta.items()),
        file=sys.stderr,
        flush=True,
    )
    try:
        run_all(check, site)
    finally:
        check.meta["total_s"] = round(time.monotonic() - check.started, 1)
        check.write_json()
        print(table(check.rows))
        about = ", ".join(f"{k} {v}" for k, v in check.meta.items() if k != "total_s")
        print(f"\n{len(check.rows)} rows in {check.meta['total_s']:.0f} s; {about}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
