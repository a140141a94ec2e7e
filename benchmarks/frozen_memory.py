"""Memory saved by partial search in a frozen network: score parameters and optimizer state, in bytes.

Usage: ``python benchmarks/frozen_memory.py [--models conv6 resnet18] [--frozen 0 0.2 0.5 0.8]
[--sparsity 0.5] [--device cpu|cuda] [--batch 128]``

For each model (CIFAR-10 sized: 10 classes, 3×32×32) and frozen fraction ``f`` (split evenly into
``frozen_pruned = frozen_kept = f/2``, as the reference's 50% example is 25% + 25%), ptl's
``edge-popup`` pruner prepares the network, SGD with momentum (what ``ptl prune`` uses) takes one
step on a random batch, and the script reports the bytes of the score parameters, of their
optimizer state (the momentum buffers) and of the frozen patterns (one int8 per weight of a pruned
layer), against ``f = 0`` (plain edge-popup). On CUDA it also reports the peak memory allocated
during a second training step (model, scores, activations and the transient scatter index), which
the persistent numbers do not include.
"""

from __future__ import annotations

import argparse

import torch

from ptl_cli import plugins, pruning
from ptl_prune import frozen
from ptl_prune.edgepopup import EdgePopup


def measure(model_name: str, fraction: float, args: argparse.Namespace) -> dict[str, float]:
    net = plugins.get("models", model_name).build(10, 3, 32, 1.0, params={})
    pruner = EdgePopup(sparsity=args.sparsity, frozen_pruned=fraction / 2, frozen_kept=fraction / 2)
    model = pruning.prepare(pruner, net, 0).to(args.device)
    optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=0.1, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=gen).to(args.device)
    y = torch.randint(10, (args.batch,), generator=gen).to(args.device)
    model.train()
    pruning.train_step(pruner, model, optimizer, x, y, 1)
    out: dict[str, float] = dict(frozen.score_bytes(model, optimizer))
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        pruning.train_step(pruner, model, optimizer, x, y, 2)
        torch.cuda.synchronize()
        out["peak_step"] = torch.cuda.max_memory_allocated()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["conv6", "resnet18"])
    parser.add_argument("--frozen", nargs="+", type=float, default=[0.0, 0.2, 0.5, 0.8])
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    if any(not 0.0 <= f / 2 <= min(args.sparsity, 1 - args.sparsity) for f in args.frozen):
        parser.error("each --frozen f needs f/2 ≤ sparsity and f/2 ≤ 1 - sparsity")
    torch.manual_seed(0)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {where}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"edge-popup, p = {args.sparsity}, f split f/2 pruned + f/2 kept; SGD momentum; MiB = 2^20 bytes")
    peak = args.device.startswith("cuda")
    header = "| model | frozen f | scores | optimizer state | frozen patterns | total | vs f = 0 |"
    print(header + (" peak step |" if peak else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if peak else ""))
    for name in args.models:
        base = None
        for fraction in args.frozen:
            m = measure(name, fraction, args)
            total = m["scores"] + m["optimizer_state"] + m["frozen_patterns"]
            base = total if base is None else base
            mib = [f"{m[k] / 2**20:.2f}" for k in ("scores", "optimizer_state", "frozen_patterns")]
            row = f"| {name} | {fraction:g} | {' | '.join(mib)} | {total / 2**20:.2f} | {total / base:.1%} |"
            print(row + (f" {m['peak_step'] / 2**20:.1f} |" if peak else ""))


if __name__ == "__main__":
    main()
