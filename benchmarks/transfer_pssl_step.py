"""P-SSL step with a PCS pool vs a plain FixMatch step on real unlabeled images (same shapes).

Both arms run the body of ``ptl_transfer.loops.train_target`` -- labeled batch, unlabeled
batch, weak/strong views, FixMatch loss, SGD step, cosine schedule, EMA update -- and differ
only in where the μB unlabeled images come from: ``PoolData.gather`` on the bundled-generator PCS
pool, or indexing the bundled Fashion-MNIST pack's images. Generation itself is amortized: the
pool is made once (its time is printed separately). Steps alternate between the arms so that
load from other processes hits both alike; the medians' ratio is reported.

    python benchmarks/transfer_pssl_step.py [--arch conv2 --width 0.5 --batch 16 --mu 7 --steps 30]

The pieces (target set, PCS pool, one arm, one step) are functions that
``benchmarks/gpu_check.py`` reuses on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ptl_cli import plugins
from ptl_cli.data.splits import per_class_split
from ptl_cli.data.views import make_views
from ptl_cli.engine.ssl_step import SSLStep
from ptl_transfer import nets, pcs
from ptl_transfer.pool import Pool, PoolData
from ptl_transfer.recipe import Optim
from ptl_transfer.sampling import StepStream
from ptl_transfer.target import select_classes


def target_set(per_class: int = 10) -> dict[str, Any]:
    """The quickstart's target: Fashion-MNIST classes 5-9, ``per_class`` labeled images each."""
    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    target = select_classes(pack, [5, 6, 7, 8, 9])
    labeled, _ = per_class_split(target.targets, per_class, seed=0)
    return {
        "pack": pack,
        "images": target.images[labeled],
        "labels": target.targets[labeled],
        "mean": target.info.mean,
        "std": target.info.std,
    }


def pcs_pool(
    root: Path, generator: Any, classifier: Any, images: torch.Tensor, per_image: int, device: Any = "cpu"
) -> tuple[PoolData, float]:
    """The PCS pool of ``images`` (``per_image`` samples each) under ``root``, and its build time (s)."""
    per_shard = 25
    pool = Pool(Path(root), "pcs", {"bench": 1}, len(images) * per_image, -(-len(images) // per_shard))

    def make(index: int):
        first = index * per_shard
        chunk = images[first : first + per_shard]
        return pcs.pcs_shard(generator, classifier, chunk, first, index, per_image, 1.0, 0, 0, 250, device)

    began = time.perf_counter()
    pool.build(make)
    return pool.open(), time.perf_counter() - began


def make_arm(
    arch: str,
    width: float,
    count: int,
    n_labeled: int,
    batch: int,
    mu: int,
    fetch: Callable[[torch.Tensor], torch.Tensor],
    device: Any = "cpu",
    image_size: int = 28,
) -> dict[str, Any]:
    """One arm: a fresh 5-class 1-channel model, FixMatch, SGD, cosine schedule, EMA, batch streams.

    ``fetch(indices)`` returns the uint8 unlabeled images (on the CPU, as a pool gives them).
    """
    cfg = Optim(steps=10_000, batch_size=batch)
    torch.manual_seed(1)
    model = plugins.get("models", arch).build(5, 1, image_size, width).to(device)
    optimizer = nets.sgd(model, cfg)
    return {
        "model": model,
        "algo": plugins.get("ssl", "fixmatch").build(5),
        "optimizer": optimizer,
        "scheduler": nets.cosine(optimizer, cfg.steps, cfg.cosine_cycles),
        "ema": nets.EMA(model, cfg.ema_decay),
        "labeled": StepStream(n_labeled, batch, 0, 1),
        "unlabeled": StepStream(count, mu * batch, 0, 2),
        "fetch": fetch,
        "steps": cfg.steps,
        "device": torch.device(device),
        "times": [],
    }


def fetch_batch(arm: dict, i: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Step ``i``'s labeled images and labels and unlabeled images, on the arm's device."""
    device = arm["device"]
    index = arm["labeled"].indices(i)
    u = arm["fetch"](arm["unlabeled"].indices(i))
    return images[index].to(device), labels[index].to(device), u.to(device)


def train_on(arm: dict, i: int, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor, mean, std, precision=None):
    """The training part of a step on a batch already on the device: the one SSL step ``ptl
    transfer`` takes (:class:`ptl_cli.engine.ssl_step.SSLStep`: views, loss, SGD, EMA)."""
    key = ("ssl_step", mean, std, id(precision))
    if arm.get("ssl_step_key") != key:  # built once per arm (and statistics and precision)
        arm["ssl_step"] = SSLStep(
            arm["algo"],
            arm["model"],
            arm["optimizer"],
            views=lambda images, names: make_views(images, names, mean, std),
            total_steps=arm["steps"],
            precision=precision,
            scheduler=arm["scheduler"],
            ema=arm["ema"],
        )
        arm["ssl_step_key"] = key
    arm["ssl_step"](i, x, y, u)


def step(arm: dict, i: int, images, labels, mean, std, clock=time.perf_counter, precision=None) -> float:
    """One full step (batch fetch included), timed with ``clock``."""
    start = clock()
    train_on(arm, i, *fetch_batch(arm, i, images, labels), mean, std, precision)
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="bundled", help="biggan weights (default: the bundled model)")
    parser.add_argument("--arch", default="conv2")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--per-image", type=int, default=40)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t = target_set()
    images, labels, mean, std = t["images"], t["labels"], t["mean"], t["std"]
    generator = plugins.get("generators", "biggan").build("cpu", params={"weights": args.weights})
    classifier = plugins.get("classifiers", "bundled").build("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data, gen_seconds = pcs_pool(Path(tmp), generator, classifier, images, args.per_image)
        print(f"PCS pool: {len(data)} samples generated in {gen_seconds:.1f} s (once; reused by every run)")

        real = t["pack"].images  # 5000 real Fashion-MNIST images, uint8 1×28×28 like the pool
        arms = {
            name: make_arm(args.arch, args.width, count, len(images), args.batch, args.mu, fetch)
            for name, count, fetch in (
                ("pool", len(data), lambda idx: data.gather(idx)["images"]),
                ("real", len(real), lambda idx: real[idx]),
            )
        }
        for i in range(args.steps + 3):
            for name in ("pool", "real") if i % 2 == 0 else ("real", "pool"):
                seconds = step(arms[name], i, images, labels, mean, std)
                if i >= 3:  # warm-up steps are not timed
                    arms[name]["times"].append(seconds)
        gather = [time.perf_counter()]
        for i in range(50):
            data.gather(arms["pool"]["unlabeled"].indices(i))
        gather.append(time.perf_counter())
        med = {name: statistics.median(arm["times"]) for name, arm in arms.items()}
        print(
            f"{args.arch} width {args.width}, B={args.batch}, μ={args.mu}, {args.steps} steps each, "
            f"threads {torch.get_num_threads()}"
        )
        print(f"P-SSL step (pool):          median {med['pool'] * 1000:.1f} ms")
        print(f"FixMatch step (real images): median {med['real'] * 1000:.1f} ms")
        print(f"ratio pool / real: {med['pool'] / med['real']:.3f}")
        print(f"pool gather of {args.mu * args.batch} samples: {(gather[1] - gather[0]) / 50 * 1000:.2f} ms")
        flops = step_flops(arms["pool"], args.steps + 3, images, labels, mean, std)
        print(
            f"one step's convolutions and matrix products: {flops / 1e9:.2f} GFLOP, done at "
            f"{flops / med['pool'] / 1e9:.1f} GFLOP/s (compare with the CPU's peak per thread)"
        )


def step_flops(arm: dict, i: int, images, labels, mean, std) -> float:
    """Floating-point operations of one step's forward and backward (torch's counter: the
    convolutions and matrix products, the work that cannot be cut without changing the result)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(arm, i, images, labels, mean, std)
    return float(counter.get_total_flops())


if __name__ == "__main__":
    main()
