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
and the median of ``--reps`` steps is reported. The clock is the process's CPU time by default
(``--clock cpu``: what a step costs, however busy a shared machine is; use ``--threads 1`` with
it, as spinning worker threads count too) or wall time (``--clock wall``, for an idle machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ptl_cli import plugins


def real_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` real Fashion-MNIST images as a CIFAR-shaped batch (3×32×32), with labels."""
    data = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    images = data.images[:batch].float() / 255.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
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
    model_name: str, method: str, x: torch.Tensor, y: torch.Tensor
) -> tuple[Callable, Callable, torch.nn.Module]:
    """(one training step, one IteRand re-draw, the model) for a ``ptl`` model prepared by ``method``."""
    from ptl_prune.build import build_pruner

    params = {"method": method}
    if method != "sgd":
        params["sparsity"] = 0.5
    pruner = build_pruner(params)
    model = plugins.get("models", model_name).build(10, 3, 32, 1.0)
    model = pruner.prepare(model, seed=0).train()
    lr = 0.01 if method == "sgd" else 0.1
    optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=lr, momentum=0.9, weight_decay=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    redraw = (lambda: pruner.redraw(model, 300)) if method == "iterand" else (lambda: None)
    return step, redraw, model


def reference_step(
    checkout: str, model_name: str, x: torch.Tensor, y: torch.Tensor
) -> tuple[Callable, Callable]:
    """The official code's score-only step (its ``SupervisedLearning`` with ``train_mode=score_only``)."""
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
    dataset_cfg = {"image_size": 32, "num_channels": 3, "num_classes": 10}
    if model_name == "conv6":
        model = Conv6(dataset_cfg, {"factor": 1.0}, cfg)
    else:
        blocks = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}[model_name]
        model = ResNet(dataset_cfg, {"block_class": "BasicBlock", "num_blocks": blocks, "factor": 1.0}, cfg)
    model.train()
    scores = [p for p in model.parameters() if getattr(p, "is_score", False)]
    optimizer = torch.optim.SGD(scores, lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        optimizer.step()

    return step, (lambda: model.rerandomize("bernoulli", 0.1, None))


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(fn: Callable[[], None], clock: Callable[[], float]) -> float:
    start = clock()
    fn()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["conv6", "resnet18"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--k-per", type=int, default=300)
    parser.add_argument("--reference", help="checkout of dchiji-ntt/iterand to compare with")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=list(CLOCKS), default="cpu", help="cpu: process CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y = real_batch(args.batch)
    clock = CLOCKS[args.clock]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.clock} clock"
    )
    for model_name in args.models:
        methods = {}
        for m in ("sgd", "edge-popup", "iterand"):
            step, redraw, model = ptl_step(model_name, m, x, y)
            methods[m] = (step, redraw)
            if m == "edge-popup":
                masks = mask_work(model)
        if args.reference:
            methods["reference"] = reference_step(args.reference, model_name, x, y)
        times: dict[str, list[float]] = {m: [] for m in methods}
        redraws: dict[str, list[float]] = {m: [] for m in ("iterand", "reference") if m in methods}
        for step, _ in methods.values():  # warm-up: allocator, kernels, lazy imports
            step()
        mask_times = []
        for _ in range(args.reps):
            for name, (step, redraw) in methods.items():
                times[name].append(timed(step, clock))
                if name in redraws:
                    redraws[name].append(timed(redraw, clock))
            mask_times.append(timed(masks, clock))
        med = {m: statistics.median(t) for m, t in times.items()}
        red = {m: statistics.median(t) for m, t in redraws.items()}
        iterand = med["iterand"] + red["iterand"] / args.k_per
        mask = statistics.median(mask_times)
        print(f"\n{model_name}: median step time over {args.reps} interleaved steps")
        print(f"  dense SGD step            {med['sgd'] * 1e3:9.1f} ms")
        print(f"  edge-popup step           {med['edge-popup'] * 1e3:9.1f} ms")
        print(f"  IteRand re-draw           {red['iterand'] * 1e3:9.1f} ms (once per {args.k_per} steps)")
        print(f"  IteRand step (amortized)  {iterand * 1e3:9.1f} ms")
        print(f"  supermask work alone      {mask * 1e3:9.1f} ms (selection, W*m, g*W: all layers)")
        print(f"  supermask / dense         {med['edge-popup'] / med['sgd']:9.3f}")
        print(f"  (dense + work) / dense    {1 + mask / med['sgd']:9.3f}  (the overhead without noise)")
        print(f"  IteRand / edge-popup      {iterand / med['edge-popup']:9.3f}  (K_per={args.k_per})")
        print(f"  1 + re-draw / K_per step  {1 + red['iterand'] / args.k_per / med['iterand']:9.4f}")
        if "reference" in methods:
            print(f"  reference step            {med['reference'] * 1e3:9.1f} ms")
            print(f"  reference re-draw         {red['reference'] * 1e3:9.1f} ms")
            print(f"  reference / ptl edge-popup {med['reference'] / med['edge-popup']:8.3f}")


if __name__ == "__main__":
    main()
