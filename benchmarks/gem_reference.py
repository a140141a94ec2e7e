"""Gem-Miner against the reference code: the same scores, flags and masks after a few steps.

Usage: ``python benchmarks/gem_reference.py --checkout /tmp/pruning_is_enough [--steps 12]
[--prune-every 2] [--sparsity 0.5] [--lmbda 1e-4]``

``--checkout`` is a checkout of ksreenivasan/pruning_is_enough (algorithm ``hc_iter``); its
``SubnetConv``/``SubnetLinear``, regulariser (``get_regularization_loss``) and round
(``prune``) are imported from there, never copied. A ptl Conv-2 (width 0.25, real images of the
bundled Fashion-MNIST pack) is prepared by ptl's ``gem-miner`` pruner; a copy of the same network
gets the reference's layers with the same ``W``, ``S`` and ``flag``. Each "epoch" is one step of
32 images, so the reference's per-epoch schedule (clamp, a round after epoch ``kP``, the rate from
``floor((E - 1)/P)`` rounds) runs per step; ptl's pruner is configured with one step per epoch
and ``E = --steps``. Both take SGD steps (lr 0.1, momentum 0.9, no weight decay) on the same
batches; per step the script prints the largest differences of the score gradients (the
regulariser included), of the scores and of the logits, and how many flags and rounded-mask entries
differ.

The reference is written for a GPU: its regulariser builds its sum with ``.cuda()``; on a machine
without one the script runs it with ``Tensor.cuda`` returning the tensor itself.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from pack_batches import batch, pack_images, scores_sgd
from torch import nn

from ptl_cli import plugins, pruning
from ptl_prune import supermask
from ptl_prune.gemminer import GemMiner


def reference(checkout: str, args: argparse.Namespace):
    """The reference's modules, its ``parser_args`` set to ``hc_iter`` with this run's settings."""
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    # its args_helper parses the command line and reads a default config (a relative path) on import
    argv, sys.argv, cwd = sys.argv, sys.argv[:1], os.getcwd()
    os.chdir(checkout)
    try:
        from args_helper import parser_args
    finally:
        sys.argv = argv
        os.chdir(cwd)
    settings = {
        "algo": "hc_iter",
        "hc_quantized": True,
        "quantize_threshold": 0.5,
        "bias": False,
        "freeze_weights": True,
        "differentiate_clamp": False,
        "bottom_k_on_forward": False,
        "prune_type": "BottomK",
        "invert_sanity_check": False,
        "rewind_score": False,
        "regularization": "L2",
        "lmbda": args.lmbda,
        "epochs": args.steps,
        "target_sparsity": 100 * (1 - args.sparsity),  # the reference's: percent of weights kept
        "iter_period": args.prune_every,
        "score_init": "unif",
        "arch": "ptl-conv2",
    }
    for key, value in settings.items():
        setattr(parser_args, key, value)
    from utils import net_utils
    from utils.conv_type import SubnetConv
    from utils.linear_type import SubnetLinear

    parser_args.prune_rate = net_utils.get_prune_rate(parser_args.target_sparsity, parser_args.iter_period)
    return parser_args, net_utils, SubnetConv, SubnetLinear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True, help="checkout of ksreenivasan/pruning_is_enough")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prune-every", type=int, default=2)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--lmbda", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref_args, net_utils, subnet_conv, subnet_linear = reference(args.checkout, args)

    def build() -> nn.Module:
        return plugins.get("models", "conv2").build(10, 1, 28, 0.25, params={})

    pruner = GemMiner(sparsity=args.sparsity, lmbda=args.lmbda, prune_every=args.prune_every)
    ours = pruning.prepare(pruner, build(), args.seed)
    pruner.configure(steps_per_epoch=1, epochs=args.steps)
    theirs = build()
    layers = []
    for name, module in supermask.prunable_layers(ours):
        parent, child = theirs.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        old = parent.get_submodule(child)
        if isinstance(old, nn.Conv2d):
            new = subnet_conv(
                old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
        else:
            new = subnet_linear(old.in_features, old.out_features, bias=False)
        mask = supermask.supermask_of(module)
        new.weight.data.copy_(supermask.original(module).detach())
        new.scores.data.copy_(mask.scores.detach())
        new.flag.data.copy_(mask.flag.float())
        parent._modules[child] = new
        layers.append(new)
    convs = [m for m in layers if isinstance(m, subnet_conv)]
    linears = [m for m in layers if isinstance(m, subnet_linear)]
    net_utils.get_layers = lambda arch=None, model=None: (convs, linears)  # the reference's per-arch list
    our_masks = [m for *_, m in supermask.masked_layers(ours)]
    opt_ours = scores_sgd(pruner.trainable_parameters(ours))
    opt_theirs = scores_sgd([m.scores for m in layers])

    images, labels = pack_images(args.steps)
    cuda = torch.Tensor.cuda
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print(f"per-round rate: ptl {pruner.round_rate():.6f}, reference {ref_args.prune_rate:.6f}")
    print(
        "step  max|dS diff|  max|S diff|  max|logit diff|  flags differing  masks differing  sparsity ptl/ref"
    )
    for step in range(args.steps):
        x, y = batch(images, labels, step)
        # ptl: the step `ptl prune` runs (clamp and round in after_step)
        pruning.train_step(pruner, ours, opt_ours, x, y, step + 1)
        # the reference: clamp, forward, loss + λ‖S‖², backward, step (trainers/default.py), clamp
        with torch.no_grad():
            for m in layers:
                m.scores.clamp_(0.0, 1.0)
        loss = nn.functional.cross_entropy(theirs(x), y)
        torch.Tensor.cuda = lambda self, *a, **k: (
            self if not torch.cuda.is_available() else cuda(self, *a, **k)
        )
        try:
            loss = loss + net_utils.get_regularization_loss(theirs, "L2", lmbda=args.lmbda)
        finally:
            torch.Tensor.cuda = cuda
        opt_theirs.zero_grad()
        loss.backward()
        # ptl added 2λS to its gradients inside optimizer.step (a pre-hook): they are what its step used
        g_diff = max(
            float((m.scores.grad - t.scores.grad).abs().max()) for m, t in zip(our_masks, layers, strict=True)
        )
        opt_theirs.step()
        with torch.no_grad():
            for m in layers:
                m.scores.clamp_(0.0, 1.0)
        if step % args.prune_every == 0 and step != 0:  # main.py: after epoch e, e % P == 0, e != 0
            net_utils.prune(theirs)
        with torch.no_grad():
            s_diff = max(
                float((m.scores - t.scores).abs().max()) for m, t in zip(our_masks, layers, strict=True)
            )
            flags = sum(int((m.flag != t.flag.bool()).sum()) for m, t in zip(our_masks, layers, strict=True))
            masks = sum(
                int((m.kept() != (t.flag.bool() & (t.scores > 0.5))).sum())
                for m, t in zip(our_masks, layers, strict=True)
            )
            logits = float((ours(images[:64]) - theirs(images[:64])).abs().max())
            total = sum(t.flag.numel() for t in layers)
            theirs_kept = sum(int((t.flag.bool() & (t.scores > 0.5)).sum()) for t in layers)
        print(
            f"{step + 1:4d}  {g_diff:12.3g}  {s_diff:11.3g}  {logits:15.3g}  {flags:15d}  {masks:15d}"
            f"  {pruner.sparsity(ours):.4f}/{1 - theirs_kept / total:.4f}"
        )


if __name__ == "__main__":
    main()
