"""Pool generation vs the generator's raw forward speed (the same images, the same batch size).

Raw: ``generator.sample`` on one-hot labels in batches, nothing else. Pool: ``Pool.build`` with
the PP shard maker -- label and noise draws per shard, resize/channel match, uint8 conversion,
atomic shard writes and the manifest. The ratio shows what the pool machinery costs on top.

    python benchmarks/transfer_pool_speed.py [--generator biggan --samples 4000 --shard 1000 --batch 250]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ptl_cli import plugins
from ptl_transfer import pcs
from ptl_transfer.pool import Pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="biggan")
    parser.add_argument("--weights", default="bundled")
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--shard", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    g = plugins.get("generators", args.generator).build("cpu", params={"weights": args.weights})
    size, channels = g.image_size, g.channels
    g.sample(torch.zeros(args.batch, dtype=torch.long))  # warm-up

    raw, pooled = [], []
    shard, batch = args.shard, args.batch
    for r in range(args.repeats):
        noise = torch.Generator().manual_seed(r)
        labels = torch.randint(g.num_classes, (args.samples,), generator=noise)
        start = time.perf_counter()
        for chunk in labels.split(args.batch):
            g.sample(chunk, generator=noise)
        raw.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as tmp:
            shards = args.samples // args.shard
            pool = Pool(Path(tmp), "pp", {"generator": g.id, "r": r}, args.samples, shards)
            start = time.perf_counter()
            pool.build(lambda i, seed=r: pcs.pp_shard(g, i, shard, seed, size, channels, batch, "cpu"))
            pooled.append(time.perf_counter() - start)
    best_raw, best_pool = min(raw), min(pooled)
    threads = torch.get_num_threads()
    print(f"{args.generator} ({g.id}), {args.samples} samples, batch {args.batch}, threads {threads}")
    print(f"raw generator:   {args.samples / best_raw:8.1f} images/s (best of {args.repeats})")
    print(f"pool generation: {args.samples / best_pool:8.1f} images/s (best of {args.repeats})")
    print(f"ratio pool / raw time: {best_pool / best_raw:.3f}")


if __name__ == "__main__":
    main()
