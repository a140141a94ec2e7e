"""Pool generation vs the generator's raw forward speed (the same images, the same batch size).

Raw: ``generator.sample`` on one-hot labels in batches, nothing else. Pool: ``Pool.build`` with
the PP shard maker -- label and noise draws per shard, resize/channel match, uint8 conversion,
atomic shard writes and the manifest. The ratio shows what the pool machinery costs on top.

    python benchmarks/transfer_pool_speed.py [--generator biggan --samples 4000 --shard 1000 --batch 250]

:func:`pool_vs_raw` is what ``benchmarks/gpu_check.py`` runs on a GPU (PP and PCS pools).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ptl_cli import plugins
from ptl_cli.engine.seeding import generator_for
from ptl_transfer import pcs
from ptl_transfer.pool import Pool


def pool_vs_raw(
    g: Any,
    samples: int,
    shard: int,
    batch: int,
    repeats: int,
    device: Any = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    classifier: Any = None,
    targets: torch.Tensor | None = None,
) -> tuple[list[float], list[float]]:
    """Seconds per repeat for ``samples`` images from (bare ``g.sample`` batches, ``Pool.build``).

    Without ``classifier`` the pool is a PP pool (``pcs.pp_shard``: uniform one-hot classes);
    with it a PCS pool (``pcs.pcs_shard``) of ``targets`` (uint8 target images, ``samples //
    len(targets)`` pseudo samples each; the raw arm then samples the same number of random
    probability rows). ``clock`` must include waiting for the device (e.g. a synchronizing one).
    """
    size, channels = g.image_size, g.channels
    raw, pooled = [], []
    per_image = samples // len(targets) if targets is not None else 0
    per_shard = max(1, shard // per_image) if per_image else 0  # target images per PCS shard
    for r in range(repeats):
        labels = torch.randint(g.num_classes, (samples,), generator=torch.Generator().manual_seed(r))
        if classifier is not None:
            rows = torch.randn(samples, g.num_classes, generator=torch.Generator().manual_seed(r))
            labels = torch.softmax(rows, 1)
        noise = generator_for(r, device=device)
        start = clock()
        for chunk in labels.split(batch):
            g.sample(chunk.to(device), generator=noise)
        raw.append(clock() - start)
        with tempfile.TemporaryDirectory() as tmp:
            if classifier is None:
                shards = samples // shard
                pool = Pool(Path(tmp), "pp", {"generator": g.id, "r": r}, samples, shards)

                def make(i: int, seed: int = r):
                    return pcs.pp_shard(g, i, shard, seed, size, channels, batch, device)

            else:
                pool = Pool(
                    Path(tmp), "pcs", {"generator": g.id, "r": r}, samples, -(-len(targets) // per_shard)
                )

                def make(i: int, seed: int = r):
                    chunk = targets[i * per_shard : (i + 1) * per_shard]
                    first = i * per_shard
                    return pcs.pcs_shard(
                        g, classifier, chunk, first, i, per_image, 1.0, 0, seed, batch, device
                    )

            start = clock()
            pool.build(make)
            pooled.append(clock() - start)
    return raw, pooled


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
    g.sample(torch.zeros(args.batch, dtype=torch.long))  # warm-up
    raw, pooled = pool_vs_raw(g, args.samples, args.shard, args.batch, args.repeats)
    best_raw, best_pool = min(raw), min(pooled)
    threads = torch.get_num_threads()
    print(f"{args.generator} ({g.id}), {args.samples} samples, batch {args.batch}, threads {threads}")
    print(f"raw generator:   {args.samples / best_raw:8.1f} images/s (best of {args.repeats})")
    print(f"pool generation: {args.samples / best_pool:8.1f} images/s (best of {args.repeats})")
    print(f"ratio pool / raw time: {best_pool / best_raw:.3f}")


if __name__ == "__main__":
    main()
