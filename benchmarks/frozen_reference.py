"""Partial search against the reference code: the same masks and scores after a few steps.

Usage: ``python benchmarks/frozen_reference.py --checkout /tmp/slt_within_frozen_network
[--steps 10] [--sparsity 0.5] [--frozen-pruned 0.25] [--frozen-kept 0.25] [--distribution erk]
[--model conv6]``

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

``--distribution erk`` first prints, per layer, the frozen fractions ptl's ``frozen_distribution =
"erk"`` gives and those of the reference's own ``get_sparsity_distribution(model, s_dist_method=
"erk", ...)`` (``utils/sparsity_distribution.py``, imported) called on the reference-layer copy as
its ``initialize_params`` calls it with ``r_method: sparsity_distribution``: pruned at density
``1 - frozen_pruned``, frozen at density ``1 - frozen_pruned - frozen_kept``, kept the difference;
and the frozen counts, ptl's (round half up) beside the reference's (``int(n·ratio)``, float32).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
from pack_batches import batch, pack_images, scores_sgd
from torch import nn

from ptl_cli import plugins, pruning
from ptl_prune import frozen, inits, supermask
from ptl_prune.edgepopup import EdgePopup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True, help="checkout of Hikari43/slt_within_frozen_network")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--frozen-pruned", type=float, default=0.25)
    parser.add_argument("--frozen-kept", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distribution", choices=("uniform", "erk"), default="uniform")
    parser.add_argument("--model", default="conv2", help="a ptl Conv-2/4/6/8 (conv2 at width 0.25)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sys.path.insert(0, os.path.join(args.checkout, "image_classification"))
    from layers.supermask_conv import SupermaskConv2d
    from layers.supermask_linear import SupermaskLinear
    from layers.utils.set_kthvalue import set_kthvalue

    def build() -> nn.Module:
        width = 0.25 if args.model == "conv2" else 1.0
        return plugins.get("models", args.model).build(10, 1, 28, width, params={})

    pruner = EdgePopup(
        sparsity=args.sparsity,
        sparsity_scope="global",
        score_abs=True,
        frozen_pruned=args.frozen_pruned,
        frozen_kept=args.frozen_kept,
        frozen_distribution=args.distribution,
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
    if args.distribution == "erk":
        compare_erk(theirs, pairs, args.frozen_pruned, args.frozen_kept)
    set_kthvalue(theirs, "global_ep", "cpu")
    opt_ours = scores_sgd(pruner.trainable_parameters(ours))
    opt_theirs = scores_sgd([m.score for _, m in pairs])

    images, labels = pack_images(args.steps)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    start = [m.kept().clone() for m, _ in pairs]
    print(
        "step  max|S diff| (searched)  max|logit diff|  mask entries differing  moved since step 0  "
        "sparsity ptl/ref"
    )
    for step in range(args.steps):
        x, y = batch(images, labels, step)
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


def compare_erk(theirs: nn.Module, pairs: list, frozen_pruned: float, frozen_kept: float) -> None:
    """Per layer: ptl's ERK frozen fractions (before rounding) and counts beside the reference's."""
    import contextlib
    import io

    from utils.sparsity_distribution import get_sparsity_distribution

    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints its every iteration
        ref_p = get_sparsity_distribution(theirs, s_dist_method="erk", density=1 - frozen_pruned)
        ref_f = get_sparsity_distribution(
            theirs, s_dist_method="erk", density=1 - frozen_pruned - frozen_kept
        )
    ref_k = ref_f - ref_p  # float32, as initialize_params computes r_dist
    shapes = [mask.shape for mask, _ in pairs]
    ours_p = frozen.erk(shapes, frozen_pruned)
    ours_k = [f - p for f, p in zip(frozen.erk(shapes, frozen_pruned + frozen_kept), ours_p, strict=True)]
    print(f"ERK frozen fractions, frozen_pruned {frozen_pruned}, frozen_kept {frozen_kept}")
    print("layer  weights  pruned fraction ptl / ref  kept fraction ptl / ref  P ptl / ref  K ptl / ref")
    worst, apart, sums = 0.0, 0, [0, 0, 0, 0, 0]
    for i, (mask, _) in enumerate(pairs):
        n = mask.frozen.numel()
        p, k = int((mask.frozen == frozen.PRUNED).sum()), int((mask.frozen == frozen.KEPT).sum())
        cp, ck = int((n * ref_p[i]).int()), int((n * ref_k[i]).int())  # initialize_params' counts
        worst = max(worst, abs(ours_p[i] - float(ref_p[i])), abs(ours_k[i] - float(ref_k[i])))
        apart = max(apart, abs(p - cp), abs(k - ck))
        sums = [a + b for a, b in zip(sums, (n, p, k, cp, ck), strict=True)]
        fractions = f"{ours_p[i]:.7f} / {float(ref_p[i]):.7f}  {ours_k[i]:.7f} / {float(ref_k[i]):.7f}"
        print(f"{i:5d}  {n:7d}  {fractions}  {p:6d} / {cp:<6d}  {k:6d} / {ck:<6d}")
    n = sums[0]
    print(
        f"all    {n:7d}  frozen pruned {sums[1] / n:.6f} / {sums[3] / n:.6f}, kept {sums[2] / n:.6f} / "
        f"{sums[4] / n:.6f}; largest fraction difference {worst:.2g}, largest count difference {apart}"
    )


if __name__ == "__main__":
    main()
