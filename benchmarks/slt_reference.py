"""MPT against the reference code: the same masks, binarized weights and scores after a few steps.

Usage: ``python benchmarks/slt_reference.py --biprop /tmp/biprop_ref [--steps 5] [--sparsity 0.5]``

``--biprop`` is a checkout of chrundle/biprop; its ``utils/conv_type.py`` is imported from there,
never copied. A ptl Conv-2 (width 0.25, Fashion-MNIST's 1×28×28, real images of the bundled pack)
is prepared by ptl's ``mpt`` pruner with its convolutions masked and its linear layers dense (the
reference masks convolutions only); a copy of the same network gets the reference's
``SubnetConv`` with the same ``W`` and ``S`` (``prune_rate = 1 - sparsity``: the reference's rate
is the fraction kept). Both take ``--steps`` SGD steps (lr 0.1, momentum 0.9, wd 1e-4) on the
same batches (with ``--reference-count`` ptl prunes the reference's count); per step the script
prints the largest differences of the forward weights, the score gradients, the scores and the
logits, and the number of mask entries that differ.

With ``--activations`` it first compares MPT-1/1's sign activation with the reference's
``BiRealAct`` (``utils/builder.py``) on the same 100,000 inputs (N(0, 1), and the points -1, 0, 1):
outputs and gradients (the upstream gradient N(0, 1) too), largest differences printed.
"""

from __future__ import annotations

import argparse
import sys
import types

import torch
from pack_batches import backward_each, batch, pack_images, scores_sgd
from torch import nn

from ptl_cli import plugins, pruning
from ptl_prune import supermask
from ptl_prune.mpt import MPT


def reference_conv(checkout: str):
    """The reference's ``SubnetConv`` (its module-level ``args`` set to what the layer reads)."""
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    argv, sys.argv = sys.argv, sys.argv[:1]  # its args.py parses the command line when imported
    try:
        import args as reference_args  # the checkout's args.py, imported in place
    finally:
        sys.argv = argv
    reference_args.args = types.SimpleNamespace(debug=False)
    from utils.conv_type import SubnetConv

    return SubnetConv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--biprop", required=True, help="checkout of chrundle/biprop")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference-count",
        action="store_true",
        help="prune the reference's int((1-k)·n) per layer instead of ptl's round(p·n)",
    )
    parser.add_argument(
        "--activations", action="store_true", help="also compare the binary activation with BiRealAct"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    subnet_conv = reference_conv(args.biprop)
    if args.activations:
        compare_activation()

    def build() -> nn.Module:
        return plugins.get("models", "conv2").build(10, 1, 28, 0.25, params={})

    pruner = MPT(sparsity=args.sparsity, layer_sparsity={"classifier.*": 0.0})
    ours = pruning.prepare(pruner, build(), args.seed)
    theirs = build()
    for name, module in supermask.prunable_layers(ours):
        parent = theirs.get_submodule(name.rsplit(".", 1)[0])
        child = name.rsplit(".", 1)[1]
        weight = supermask.original(module).detach().clone()
        mask = supermask.supermask_of(module)
        if mask is None:  # a dense layer: the same frozen random weight
            target = parent.get_submodule(child)
            target.weight.data.copy_(weight)
        else:
            old = parent.get_submodule(child)
            target = subnet_conv(
                old.in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
            target.weight.data.copy_(weight)
            target.scores.data.copy_(mask.scores.detach())
            target.set_prune_rate(1.0 - args.sparsity)
            parent._modules[child] = target
        target.weight.requires_grad_(False)
        if target.bias is not None:
            target.bias.data.zero_()
            target.bias.requires_grad_(False)
    their_scores = [m.scores for m in theirs.modules() if isinstance(m, subnet_conv)]
    our_masks = [m for *_, m in supermask.masked_layers(ours)]
    if args.reference_count:
        for mask in our_masks:
            mask.pruned = int((1 - (1.0 - args.sparsity)) * mask.scores.numel())
    opt_ours = scores_sgd(pruner.trainable_parameters(ours), weight_decay=1e-4)
    opt_theirs = scores_sgd(their_scores, weight_decay=1e-4)

    images, labels = pack_images(args.steps)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("step  max|Ŵ diff|  max|dS diff|  max|S diff|  max|logit diff|  mask entries differing")
    for step in range(args.steps):
        x, y = batch(images, labels, step)
        backward_each(((ours, opt_ours), (theirs, opt_theirs)), x, y)
        with torch.no_grad():
            w_diff = max(
                float((mine.forward(supermask.original(m)) - _their_weight(t)).abs().max())
                for mine, m, t in zip(
                    our_masks, _masked_modules(ours), _subnets(theirs, subnet_conv), strict=True
                )
            )
            g_diff = max(
                float((m.scores.grad - s.grad).abs().max())
                for m, s in zip(our_masks, their_scores, strict=True)
            )
        opt_ours.step()
        opt_theirs.step()
        with torch.no_grad():
            s_diff = max(
                float((m.scores - s).abs().max()) for m, s in zip(our_masks, their_scores, strict=True)
            )
            flips = sum(
                int((m.kept() != _their_mask(t)).sum())
                for m, t in zip(our_masks, _subnets(theirs, subnet_conv), strict=True)
            )
            logits = float((ours(images[:64]) - theirs(images[:64])).abs().max())
        print(f"{step + 1:4d}  {w_diff:11.3g}  {g_diff:12.3g}  {s_diff:11.3g}  {logits:15.3g}  {flips:8d}")


def compare_activation() -> None:
    """ptl's sign activation against the reference's ``BiRealAct``: outputs and input gradients."""
    from utils.builder import BiRealAct

    from ptl_prune.mpt import BinaryActivation

    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(100_000, generator=gen), torch.tensor([-1.0, 0.0, 1.0])])
    upstream = torch.randn(x.shape, generator=gen)
    outputs, grads = [], []
    for act in (BinaryActivation(), BiRealAct()):
        xi = x.clone().requires_grad_(True)
        out = act(xi)
        (out * upstream).sum().backward()
        outputs.append(out.detach())
        grads.append(xi.grad)
    print(
        f"activation: max|output diff| {float((outputs[0] - outputs[1]).abs().max()):.3g}, "
        f"max|grad diff| {float((grads[0] - grads[1]).abs().max()):.3g} over {x.numel()} inputs"
    )


def _masked_modules(model: nn.Module) -> list[nn.Module]:
    return [module for _, _, module, _ in supermask.masked_layers(model)]


def _subnets(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def _their_mask(layer: nn.Module) -> torch.Tensor:
    """The reference's kept set: its ``int((1 - k)·n)`` lowest ``|S|`` pruned (a stable sort)."""
    flat = layer.scores.abs().flatten()
    pruned = int((1 - layer.prune_rate) * flat.numel())
    kept = torch.ones_like(flat, dtype=torch.bool)
    kept[flat.sort().indices[:pruned]] = False
    return kept.view(layer.scores.shape)


def _their_weight(layer: nn.Module) -> torch.Tensor:
    """The weight the reference's forward uses: ``sign(W) · α·m`` (its own functions)."""
    from utils.conv_type import GetQuantnet_binary

    return torch.sign(layer.weight) * GetQuantnet_binary.apply(
        layer.scores.abs(), layer.weight, layer.prune_rate
    )


if __name__ == "__main__":
    main()
