"""Partial search against the reference code: the same masks and scores after a few steps.

Usage: ``python benchmarks/frozen_reference.py --checkout /tmp/slt_within_frozen_network
[--steps 10] [--sparsity 0.5] [--frozen-pruned 0.25] [--frozen-kept 0.25]``

``--checkout`` is a checkout of Hikari43/slt_within_frozen_network; its ``SupermaskConv2d``,
``SupermaskLinear`` and ``set_kthvalue`` (``image_classification/layers``) are imported from there,
never copied. A ptl Conv-2 (width 0.25, real images of the bundled Fashion-MNIST pack) is prepared
by ptl's ``edge-popup`` with ``|S|`` ranked over all layers (the reference's ``global_ep``) and the
frozen fractions; a copy of the same network gets the reference's layers with the same ``W``, the
same scores at the searched weights (the reference keeps scores for the frozen ones too: they get
the initial draw there, which its mask ignores) and ptl's frozen pattern as its
``ternary_frozen_mask``. Both take SGD steps (lr 0.1, momentum 0.9, no weight decay) on the same
batches, the reference recomputing its threshold after each step as its training loop does; per
step the script prints the largest differences of the searched scores and of the logits, how
many mask entries differ, and how many of ptl's mask entries moved since the start (so a
comparison of masks that never change does not pass for agreement).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

from ptl_cli import plugins, pruning
from ptl_prune import inits, supermask
from ptl_prune.edgepopup import EdgePopup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True, help="checkout of Hikari43/slt_within_frozen_network")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--frozen-pruned", type=float, default=0.25)
    parser.add_argument("--frozen-kept", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.join(args.checkout, "image_classification"))
    from layers.supermask_conv import SupermaskConv2d
    from layers.supermask_linear import SupermaskLinear
    from layers.utils.set_kthvalue import set_kthvalue

    def build() -> nn.Module:
        return plugins.get("models", "conv2").build(10, 1, 28, 0.25, params={})

    pruner = EdgePopup(
        sparsity=args.sparsity,
        sparsity_scope="global",
        score_abs=True,
        frozen_pruned=args.frozen_pruned,
        frozen_kept=args.frozen_kept,
    )
    ours = pruning.prepare(pruner, build(), args.seed)
    theirs = build()
    pairs = []
    for index, name, module, mask in supermask.masked_layers(ours):
        parent, child = theirs.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
        old = parent.get_submodule(child)
        if isinstance(old, nn.Conv2d):
            new = SupermaskConv2d(
                old.in_channels, old.out_channels, old.kernel_size, args.sparsity, "global_ep",
                stride=old.stride, padding=old.padding,
            )  # fmt: skip
        else:
            new = SupermaskLinear(old.in_features, old.out_features, args.sparsity, "global_ep")
        full = inits.initial_scores(pruner.score_init, mask.shape, args.seed, index)
        with torch.no_grad():
            new.weight.copy_(supermask.original(module))
            new.score.copy_(full)
            new.score[mask.frozen == 0] = mask.scores.detach()  # the same values where searched
            new.ternary_frozen_mask.copy_(mask.frozen.float())
        parent._modules[child] = new
        pairs.append((mask, new))
    set_kthvalue(theirs, "global_ep", "cpu")
    opt_ours = torch.optim.SGD(pruner.trainable_parameters(ours), lr=0.1, momentum=0.9)
    opt_theirs = torch.optim.SGD([m.score for _, m in pairs], lr=0.1, momentum=0.9)

    dataset = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    images = (dataset.images[: 32 * args.steps].float() / 255.0 - dataset.info.mean[0]) / dataset.info.std[0]
    labels = dataset.targets[: 32 * args.steps]
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    start = [m.kept().clone() for m, _ in pairs]
    print(
        "step  max|S diff| (searched)  max|logit diff|  mask entries differing  moved since step 0  "
        "sparsity ptl/ref"
    )
    for step in range(args.steps):
        x, y = images[32 * step : 32 * step + 32], labels[32 * step : 32 * step + 32]
        pruning.train_step(pruner, ours, opt_ours, x, y, step + 1)
        opt_theirs.zero_grad()
        nn.functional.cross_entropy(theirs(x), y).backward()
        opt_theirs.step()
        set_kthvalue(theirs, "global_ep", "cpu")  # as its train loop does after each step
        with torch.no_grad():
            theirs(images[:1])  # their forward writes each layer's mask
            s_diff = max(float((m.scores - t.score[m.frozen == 0]).abs().max()) for m, t in pairs)
            flips = sum(int((m.kept() != t.mask.bool()).sum()) for m, t in pairs)
            moved = sum(int((m.kept() != k).sum()) for (m, _), k in zip(pairs, start, strict=True))
            kept = sum(int(t.mask.sum()) for _, t in pairs)
            total = sum(t.mask.numel() for _, t in pairs)
            logits = float((ours(images[:64]) - theirs(images[:64])).abs().max())
        print(
            f"{step + 1:4d}  {s_diff:22.3g}  {logits:15.3g}  {flips:22d}  {moved:18d}  "
            f"{pruner.sparsity(ours):.4f}/{1 - kept / total:.4f}"
        )


if __name__ == "__main__":
    main()
