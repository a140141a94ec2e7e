"""Generator sampling through the plugin vs a bare forward pass of the same network (ratios).

    python benchmarks/generators_throughput.py [--batch 64] [--repeats 5] [--threads 1]

Ratio = plugin time / bare time for the same batch, in one process, the median over alternating
plugin/bare pairs (≈ 1.0 means the plugin adds nothing: noise drawing, conditioning, the DDIM loop
and the [0, 1] conversion are negligible). BigGAN bare: ``net(z, one_hot, ψ)``. DDPM bare:
``steps`` UNet forwards on the CFG-doubled batch (what the sampling loop must run anyway; the
plugin also draws the η noise). The DDIM step/quality trade-off is measured by
``benchmarks/generators_quality.py diffusers --steps 5,10,25,50 --eta 0,1``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ptl_cli import plugins


def paired(
    plugin: Callable[[], object], bare: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """Median plugin time, median bare time and median per-pair ratio of alternating runs.

    Plugin and bare runs alternate, so load from other jobs on a shared machine hits both alike.
    """
    plugin(), bare()  # warm-up
    times: dict[str, list[float]] = {"plugin": [], "bare": []}
    for _ in range(repeats):
        for name, fn in (("plugin", plugin), ("bare", bare)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ratios = [p / b for p, b in zip(times["plugin"], times["bare"], strict=True)]
    return statistics.median(times["plugin"]), statistics.median(times["bare"]), statistics.median(ratios)


@torch.no_grad()
def biggan_ratio(batch: int, repeats: int) -> tuple[float, float, float]:
    gen = plugins.get("generators", "biggan").build("cpu")
    y = torch.arange(batch) % gen.num_classes
    z = gen.noise(batch, torch.Generator().manual_seed(0))
    one_hot = F.one_hot(y, gen.num_classes).float()
    return paired(
        lambda: gen.sample(y, generator=torch.Generator().manual_seed(0)),
        lambda: gen.net(z, one_hot, gen.truncation),
        repeats,
    )


@torch.no_grad()
def ddpm_ratio(batch: int, repeats: int, steps: int) -> tuple[float, float, float]:
    gen = plugins.get("generators", "diffusers").build("cpu", params={"steps": steps})
    y = torch.arange(batch) % gen.num_classes
    unet = gen.model
    c, h, w = unet.config.in_channels, unet.config.sample_size, unet.config.sample_size
    x = torch.randn(2 * batch, c, h, w)
    labels = torch.cat([y, torch.full_like(y, gen.null_class)])
    timesteps = torch.linspace(999, 0, steps).long()

    def bare() -> None:
        for t in timesteps:
            unet(x, t, class_labels=labels)

    return paired(lambda: gen.sample(y, generator=torch.Generator().manual_seed(0)), bare, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ddpm-steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, (plugin, bare, ratio) in (
        ("biggan (bundled)", biggan_ratio(args.batch, args.repeats)),
        (
            f"diffusers (bundled, {args.ddpm_steps} DDIM steps, CFG)",
            ddpm_ratio(args.batch, args.repeats, args.ddpm_steps),
        ),
    ):
        rate = args.batch / plugin
        print(
            f"{name}: plugin {plugin * 1e3:.1f} ms, bare {bare * 1e3:.1f} ms, "
            f"ratio {ratio:.3f} (median of {args.repeats} alternating pairs), {rate:.0f} img/s"
        )


if __name__ == "__main__":
    main()
