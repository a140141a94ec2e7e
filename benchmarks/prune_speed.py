"""Speed of a supermask training step against a dense one, in one process, as ratios.

    python benchmarks/prune_speed.py [--models conv6 resnet18] [--batch 128] [--reps 5]
                                     [--reference /tmp/iterand_ref] [--threads N]

For each model (CIFAR shape: real Fashion-MNIST images upsampled to 3×32×32, 10 classes) it
times full training steps (forward, backward, optimizer step) of

* ``dense``: ``ptl`` dense SGD (all weights trained) — the yardstick;
* ``edge-popup``: ``ptl`` supermask step (scores trained, weights frozen);
* ``iterand``: the edge-popup step plus the re-draw, amortized over ``K_per = 300`` steps
  (the re-draw is timed on its own: running 300 steps per measurement is too slow on a CPU);
* ``supermask work alone``: just what a supermask adds to a step (selection, ``W ⊙ m``, one
  more weight-sized product for the backward), which bounds the true overhead when the step
  ratios are within the noise of a shared machine;
* ``reference``: the official implementation (``dchiji-ntt/iterand``, a checkout given with
  ``--reference``; it is imported from there, never copied), same model, batch and optimizer.

Methods are interleaved (A B C D A B C D ...) so that a change in machine load hits all of them,
and the median of ``--reps`` steps is reported, with the median and interquartile range of the
supermask / dense ratio taken round by round. The clock is the process's CPU time by default
(``--clock cpu``: what a step costs, however busy a shared machine is; use ``--threads 1`` with
it, as spinning worker threads count too), its user-mode part (``--clock user``: without the
kernel's page-fault work, which moves with glibc's heap state) or wall time (``--clock wall``,
for an idle machine).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ptl_cli import plugins
from ptl_cli.engine.malloc import keep_freed_memory


def real_batch(batch: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` real Fashion-MNIST images as a CIFAR-shaped batch (3×size×size), with labels."""
    data = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    images = data.images[:batch].float() / 255.0
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return (images - 0.5) / 0.25, data.targets[:batch]


def mask_work(model: torch.nn.Module) -> Callable[[], None]:
    """The work a supermask adds to a step, alone: every layer's selection and ``W ⊙ m`` (forward),
    and one more product of a weight-sized tensor (``dL/dS = g ⊙ W``, backward). Timing it on its
    own bounds the true overhead, which the step ratios measure only through the machine's noise."""
    from ptl_prune import supermask

    layers = [(supermask.original(module), mask) for *_, module, mask in supermask.masked_layers(model)]

    def work() -> None:
        with torch.no_grad():
            for weight, mask in layers:
                masked = supermask.masked_weight(weight, mask.scores, mask.kept())
                masked.mul_(weight)  # stands for the backward's g ⊙ W

    return work


def ptl_step(
    model_name: str,
    method: str,
    x: torch.Tensor,
    y: torch.Tensor,
    compute: Any = None,
    precision: Any = None,
) -> tuple[Callable, Callable, torch.nn.Module]:
    """(one training step, one IteRand re-draw, the model) for a ``ptl`` model prepared by ``method``.

    The model is built for ``x``'s image size. With ``compute`` (``channels_last``, ``compile``) it
    goes to ``x``'s device through the engine's ``prepare_model`` and the step runs under
    ``precision`` (a :class:`ptl_cli.engine.device.Precision`), as the prune workflow does; without
    them it is the plain CPU step.
    """
    from ptl_prune.build import build_pruner

    params = {"method": method}
    if method != "sgd":
        params["sparsity"] = 0.5
    pruner = build_pruner(params)
    model = plugins.get("models", model_name).build(10, 3, x.shape[-1], 1.0)
    model = pruner.prepare(model, seed=0).train()
    train_model = model
    if compute is not None:
        from ptl_cli.engine.compute import prepare_model

        model, train_model = prepare_model(model, compute, x.device)
    lr = 0.01 if method == "sgd" else 0.1
    from ptl_cli.engine.compute import optimizer_options

    optimizer = torch.optim.SGD(
        pruner.trainable_parameters(model),
        lr=lr,
        momentum=0.9,
        weight_decay=1e-4,
        **optimizer_options(x.device),  # fused on CUDA, as ptl prune's
    )

    if precision is None:

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    else:

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                loss = F.cross_entropy(train_model(x), y)
            precision.backward_and_step(loss, optimizer)

    redraw = (lambda: pruner.redraw(model, 300)) if method == "iterand" else (lambda: None)
    return step, redraw, model


#: the official code's ResNets: (block class, blocks per stage)
REFERENCE_RESNETS = {
    "resnet18": ("BasicBlock", [2, 2, 2, 2]),
    "resnet34": ("BasicBlock", [3, 4, 6, 3]),
    "torchvision:resnet50": ("Bottleneck", [3, 4, 6, 3]),
}


def reference_step(
    checkout: str, model_name: str, x: torch.Tensor, y: torch.Tensor, precision: Any = None
) -> tuple[Callable, Callable]:
    """The official code's score-only step (its ``SupervisedLearning`` with ``train_mode=score_only``),
    on ``x``'s device and image size; ``precision`` adds the same autocast as :func:`ptl_step`."""
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    from models.networks.convs import Conv6  # the official checkout, imported in place
    from models.networks.resnet import ResNet

    cfg = {
        "conv_sparsity": 0.5,
        "linear_sparsity": None,
        "init_mode": "kaiming_uniform",
        "init_mode_linear": None,
        "init_mode_mask": "kaiming_uniform",
        "init_scale": 1.0,
        "init_scale_score": 1.0,
        "rerand_rate": 1.0,
        "bn_momentum": 0.1,
        "bn_track_running_stats": True,
        "bn_affine": False,
    }
    dataset_cfg = {"image_size": x.shape[-1], "num_channels": 3, "num_classes": 10}
    if model_name == "conv6":
        model = Conv6(dataset_cfg, {"factor": 1.0}, cfg)
    else:
        block, blocks = REFERENCE_RESNETS[model_name]
        model = ResNet(dataset_cfg, {"block_class": block, "num_blocks": blocks, "factor": 1.0}, cfg)
    model.to(x.device).train()
    scores = [p for p in model.parameters() if getattr(p, "is_score", False)]
    optimizer = torch.optim.SGD(scores, lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    autocast = precision.autocast if precision is not None else contextlib.nullcontext

    def step() -> None:
        optimizer.zero_grad()
        with autocast():
            loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()

    return step, (lambda: model.rerandomize("bernoulli", 0.1, None))


def cuda_clock() -> float:
    """Wall time after the GPU has finished everything queued: a step's time, not its launch's."""
    torch.cuda.synchronize()
    return time.perf_counter()


def user_clock() -> float:
    """The process's user-mode CPU time: ``cpu`` without the kernel's share, most of which on a
    CPU step is zero-filling the fresh pages that large allocations fault in (glibc returns freed
    memory to the system and gets it back, a cost that moves with the allocator's state)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


CLOCKS = {"cpu": time.process_time, "user": user_clock, "wall": time.perf_counter, "cuda": cuda_clock}


def timed(fn: Callable[[], None], clock: Callable[[], float]) -> float:
    start = clock()
    fn()
    return clock() - start


def interleaved(
    fns: dict[str, Callable[[], None]],
    reps: int,
    clock: Callable[[], float],
    warmup: int = 1,
    until: float = math.inf,
) -> dict[str, list[float]]:
    """Each function's time in ``reps`` rounds of A B C ... (after ``warmup`` untimed rounds), so
    that a change in machine load hits all of them alike. Rounds stop early, with at least one
    done, once ``time.monotonic()`` passes ``until``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(reps):
        if i and time.monotonic() > until:
            break
        for name, fn in fns.items():
            times[name].append(timed(fn, clock))
    return times


def iqr(values: list[float]) -> float:
    """Interquartile range (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q3 - q1


def round_ratios(times: dict[str, list[float]], num: str, den: str) -> tuple[float, float, float]:
    """Median, first and third quartile of ``num / den`` taken round by round.

    Both were timed in the same round, back to back, so a change in machine load divides out of
    each ratio; the quartiles say how far a rerun's median may land.
    """
    ratios = [a / b for a, b in zip(times[num], times[den], strict=True)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, q2, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return q2, q1, q3


def summary(times: dict[str, list[float]], k_per: int) -> dict[str, float]:
    """Medians (seconds) of every timed function and the ratios the benchmark reports.

    ``times`` holds ``sgd``, ``edge-popup``, ``iterand`` and ``iterand re-draw``, optionally
    ``mask work``, ``reference`` and ``reference re-draw``. The IteRand step is amortized: its
    step plus one re-draw every ``k_per`` steps.
    """
    out = {name: statistics.median(t) for name, t in times.items()}
    out["iterand amortized"] = out["iterand"] + out["iterand re-draw"] / k_per
    out["supermask / dense"] = out["edge-popup"] / out["sgd"]
    out["iterand / edge-popup"] = out["iterand amortized"] / out["edge-popup"]
    out["1 + re-draw / K_per step"] = 1 + out["iterand re-draw"] / k_per / out["iterand"]
    if "mask work" in out:
        out["(dense + work) / dense"] = 1 + out["mask work"] / out["sgd"]
    if "reference" in out:
        out["reference / edge-popup"] = out["reference"] / out["edge-popup"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["conv6", "resnet18"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--k-per", type=int, default=300)
    parser.add_argument("--reference", help="checkout of dchiji-ntt/iterand to compare with")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="cpu: process CPU time")
    parser.add_argument(
        "--no-malloc-tuning", action="store_true", help="glibc's defaults, not what a CPU `ptl` run sets"
    )
    args = parser.parse_args()
    tuned = [] if args.no_malloc_tuning else keep_freed_memory()  # as compute.malloc_tuning does
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = real_batch(args.batch)
    clock = CLOCKS[args.clock]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.clock} clock, malloc tuning {'on' if tuned else 'off'}"
    )
    for model_name in args.models:
        fns: dict[str, Callable[[], None]] = {}
        for m in ("sgd", "edge-popup", "iterand"):
            step, redraw, model = ptl_step(model_name, m, x, y)
            fns[m] = step
            if m == "iterand":
                fns["iterand re-draw"] = redraw
            if m == "edge-popup":
                masks = mask_work(model)
        if args.reference:
            fns["reference"], fns["reference re-draw"] = reference_step(args.reference, model_name, x, y)
        fns["mask work"] = masks
        times = interleaved(fns, args.reps, clock)
        s = summary(times, args.k_per)
        ratio, q1, q3 = round_ratios(times, "edge-popup", "sgd")
        work, w1, w3 = round_ratios(times, "mask work", "sgd")
        print(f"\n{model_name}: median step time over {args.reps} interleaved steps")
        print(f"  dense SGD step            {s['sgd'] * 1e3:9.1f} ms")
        print(f"  edge-popup step           {s['edge-popup'] * 1e3:9.1f} ms")
        redraw_ms = s["iterand re-draw"] * 1e3
        print(f"  IteRand re-draw           {redraw_ms:9.1f} ms (once per {args.k_per} steps)")
        print(f"  IteRand step (amortized)  {s['iterand amortized'] * 1e3:9.1f} ms")
        print(f"  supermask work alone      {s['mask work'] * 1e3:9.1f} ms (selection, W*m, g*W: all layers)")
        print(f"  supermask / dense         {s['supermask / dense']:9.3f}  (ratio of the medians)")
        print(f"  supermask / dense, rounds {ratio:9.3f}  IQR {q1:.3f}-{q3:.3f} (median of per-round ratios)")
        print(f"  (dense + work) / dense    {s['(dense + work) / dense']:9.3f}  (the overhead without noise)")
        print(f"  (dense + work), rounds    {1 + work:9.3f}  IQR {1 + w1:.3f}-{1 + w3:.3f}")
        print(f"  IteRand / edge-popup      {s['iterand / edge-popup']:9.3f}  (K_per={args.k_per})")
        print(f"  1 + re-draw / K_per step  {s['1 + re-draw / K_per step']:9.4f}")
        if "reference" in s:
            print(f"  reference step            {s['reference'] * 1e3:9.1f} ms")
            print(f"  reference re-draw         {s['reference re-draw'] * 1e3:9.1f} ms")
            print(f"  reference / ptl edge-popup {s['reference / edge-popup']:8.3f}")


if __name__ == "__main__":
    main()
