"""P-SSL step with a PCS pool vs a plain FixMatch step on real unlabeled images (same shapes).

Both arms run the body of ``ptl_transfer.loops.train_target`` -- labeled batch, unlabeled
batch, weak/strong views, FixMatch loss, SGD step, cosine schedule, EMA update -- and differ
only in where the μB unlabeled images come from: ``PoolData.gather`` on the bundled-generator PCS
pool, or indexing the bundled Fashion-MNIST pack's images. Generation itself is amortized: the
pool is made once (its time is printed separately). Steps alternate between the arms so that
load from other processes hits both alike; the medians' ratio is reported.

    python benchmarks/transfer_pssl_step.py [--arch conv2 --width 0.5 --batch 16 --mu 7 --steps 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ptl_cli import plugins
from ptl_cli.data.splits import per_class_split
from ptl_ssl.views import make_views
from ptl_transfer import nets, pcs
from ptl_transfer.pool import Pool
from ptl_transfer.recipe import Optim
from ptl_transfer.sampling import StepStream
from ptl_transfer.target import select_classes


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

    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    target = select_classes(pack, [5, 6, 7, 8, 9])
    labeled, _ = per_class_split(target.targets, 10, seed=0)
    images, labels = target.images[labeled], target.targets[labeled]
    mean, std = target.info.mean, target.info.std

    generator = plugins.get("generators", "biggan").build("cpu", params={"weights": args.weights})
    classifier = plugins.get("classifiers", "bundled").build("cpu")
    per_shard = 25
    with tempfile.TemporaryDirectory() as tmp:
        pool = Pool(
            Path(tmp), "pcs", {"bench": 1}, len(images) * args.per_image, -(-len(images) // per_shard)
        )

        def make(index: int):
            first = index * per_shard
            chunk = images[first : first + per_shard]
            return pcs.pcs_shard(
                generator, classifier, chunk, first, index, args.per_image, 1.0, 0, 0, 250, "cpu"
            )

        began = time.perf_counter()
        pool.build(make)
        gen_seconds = time.perf_counter() - began
        data = pool.open()
        print(f"PCS pool: {len(data)} samples generated in {gen_seconds:.1f} s (once; reused by every run)")

        real = pack.images  # 5000 real Fashion-MNIST images, uint8 1×28×28 like the pool
        cfg = Optim(steps=10_000, batch_size=args.batch)
        arms = {}
        for name, count, fetch in (
            ("pool", len(data), lambda idx: data.gather(idx)["images"]),
            ("real", len(real), lambda idx: real[idx]),
        ):
            torch.manual_seed(1)
            model = plugins.get("models", args.arch).build(5, 1, 28, args.width)
            algo = plugins.get("ssl", "fixmatch").build(5)
            optimizer = nets.sgd(model, cfg)
            arms[name] = {
                "model": model,
                "algo": algo,
                "optimizer": optimizer,
                "scheduler": nets.cosine(optimizer, cfg.steps, cfg.cosine_cycles),
                "ema": nets.EMA(model, cfg.ema_decay),
                "labeled": StepStream(len(images), args.batch, 0, 1),
                "unlabeled": StepStream(count, args.mu * args.batch, 0, 2),
                "fetch": fetch,
                "times": [],
            }

        def step(arm: dict, i: int) -> float:
            start = time.perf_counter()
            index = arm["labeled"].indices(i)
            views_x = make_views(images[index], arm["algo"].labeled_views, mean, std)
            u = arm["fetch"](arm["unlabeled"].indices(i))
            views_u = make_views(u, arm["algo"].unlabeled_views, mean, std)
            loss, _ = arm["algo"].loss(arm["model"], views_x, labels[index], views_u, i, cfg.steps)
            arm["optimizer"].zero_grad(set_to_none=True)
            loss.backward()
            arm["optimizer"].step()
            arm["scheduler"].step()
            arm["algo"].after_step(arm["model"], i)
            arm["ema"].update(arm["model"], i)
            return time.perf_counter() - start

        for i in range(args.steps + 3):
            for name in ("pool", "real") if i % 2 == 0 else ("real", "pool"):
                t = step(arms[name], i)
                if i >= 3:  # warm-up steps are not timed
                    arms[name]["times"].append(t)
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


if __name__ == "__main__":
    main()
