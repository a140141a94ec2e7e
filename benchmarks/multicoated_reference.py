"""Multicoated supermasks against the reference code: the same levels, weights and scores after a few steps.

Usage: ``python benchmarks/multicoated_reference.py --checkout /tmp/mc [--steps 5]
[--coats 0.7 0.9212 0.9685] [--reference-count]``

``--checkout`` is a checkout of yasu0001/multicoated-supermasks; its ``src/custom_conv.py``
(``MultiLevelHN``) and ``src/custom_cls.py`` (``CustomLinear``) are imported from there, never
copied. Those modules register themselves with mmcv's and mmcls's registries at import; where
mmcv/mmcls are not installed, stand-ins for the two registries and the head's base class (which
neither compared layer uses) are put in ``sys.modules`` first. A ptl Conv-2 (width 0.25,
Fashion-MNIST's 1×28×28, real images of the bundled pack) is prepared by ptl's ``multicoated``
pruner, all five layers masked as in the reference (its convolutions and its classifier); a copy of
the same network gets the reference's layers with the same ``W`` (its own initialization is
replaced, see docs/prune.md) and ``S``, and its kth values set as its ``UpdateKthValuesHook`` does:
before the first step and after every step. Both take ``--steps`` SGD steps (lr 0.1, momentum 0.9,
wd 1e-4: the reference's schedule) on the same batches. Per step the script prints the largest
differences of the forward weights, the score gradients, the scores and the logits, and the number
of mask entries whose level (how many coats keep it) differs. With ``--reference-count`` ptl prunes,
per coat, the reference's count ``1 + floor(p·(n - 1))`` instead of its own ``round(p·n)``.
"""

from __future__ import annotations

import argparse
import sys
import types

import numpy as np
import torch
from torch import nn

from ptl_cli import plugins, pruning
from ptl_prune import supermask
from ptl_prune.multicoated import Multicoated


class _Registry:
    """Stands in for an mmcv registry: ``register_module`` only returns the class it decorates."""

    def register_module(self, name=None, force=False, module=None):
        return lambda cls: cls


def _stand_in(name: str, **attrs: object) -> None:
    module = sys.modules.setdefault(name, types.ModuleType(name))
    for key, value in attrs.items():
        setattr(module, key, value)


def reference_layers(checkout: str) -> tuple[type, type]:
    """The reference's ``MultiLevelHN`` and ``CustomLinear``, imported from ``checkout/src``."""
    try:
        import mmcls.models  # noqa: F401
        import mmcv.cnn  # noqa: F401
    except ImportError:  # the layers only need the registries' decorators and a base class
        for parent in ("mmcv", "mmcls", "mmcls.models"):
            _stand_in(parent)
        _stand_in("mmcv.cnn", CONV_LAYERS=_Registry())
        _stand_in("mmcls.models.heads", ClsHead=nn.Module)
        _stand_in("mmcls.models.builder", HEADS=_Registry())
    if checkout not in sys.path:
        sys.path.insert(0, checkout)
    from src.custom_cls import CustomLinear
    from src.custom_conv import MultiLevelHN

    return MultiLevelHN, CustomLinear


def reference_pruned(n: int, sparsity: float) -> int:
    """How many entries the reference prunes: those below its kth value, the sorted entry at
    index ``1 + floor(p·(n - 1))`` (``src/custom_grad.py``'s ``percentile``), for distinct scores."""
    return int(1 + np.floor(sparsity * (n - 1)))


def main() -> None:
    from pack_batches import (  # a sibling script: imported when run
        backward_each,
        batch,
        pack_images,
        scores_sgd,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True, help="checkout of yasu0001/multicoated-supermasks")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument(
        "--coats", type=float, nargs="+", default=[0.7, 0.9212, 0.9685], help="p of each coat, rising"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference-count",
        action="store_true",
        help="prune the reference's 1 + floor(p·(n-1)) per coat instead of ptl's round(p·n)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    conv_kind, linear_kind = reference_layers(args.checkout)
    coats = np.array(args.coats)

    def build() -> nn.Module:
        return plugins.get("models", "conv2").build(10, 1, 28, 0.25, params={})

    pruner = Multicoated(sparsity=args.coats[0], coat_sparsity=args.coats[1:])
    ours = pruning.prepare(pruner, build(), args.seed)
    theirs = build()
    print("layer  n  pruned per coat: ptl / reference")
    for name, module in supermask.prunable_layers(ours):
        parent_name, child = name.rsplit(".", 1)
        parent = theirs.get_submodule(parent_name)
        old = parent.get_submodule(child)
        if isinstance(old, nn.Conv2d):
            target = conv_kind(
                old.in_channels,
                old.out_channels,
                old.kernel_size,
                old.stride,
                old.padding,
                bias=False,
                sparsity=coats,
            )
        else:
            target = linear_kind(old.in_features, old.out_features, coats)
        mask = supermask.supermask_of(module)
        with torch.no_grad():
            target.weight.copy_(supermask.original(module))
            target.score.copy_(mask.scores)
        target.set_kthvalues()
        parent._modules[child] = target
        n = mask.scores.numel()
        if args.reference_count:
            mask.pruned, *mask.coat_pruned = (reference_pruned(n, p) for p in args.coats)
        ours_counts = [mask.pruned, *mask.coat_pruned]
        theirs_counts = [reference_pruned(n, p) for p in args.coats]
        print(f"{name}  {n}  {ours_counts} / {theirs_counts}")
    our_masks = [m for *_, m in supermask.masked_layers(ours)]
    our_layers = [module for _, _, module, _ in supermask.masked_layers(ours)]
    their_layers = [m for m in theirs.modules() if isinstance(m, conv_kind | linear_kind)]
    their_scores = [m.score for m in their_layers]
    opt_ours = scores_sgd(pruner.trainable_parameters(ours), weight_decay=1e-4)
    opt_theirs = scores_sgd(their_scores, weight_decay=1e-4)

    images, labels = pack_images(args.steps)
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("step  max|Ŵ diff|  max|dS diff|  max|S diff|  max|logit diff|  levels differing  at a tie")
    for step in range(args.steps):
        x, y = batch(images, labels, step)
        backward_each(((ours, opt_ours), (theirs, opt_theirs)), x, y)
        with torch.no_grad():
            w_diff = max(
                float((mine.forward(supermask.original(m)) - _their_weight(t)).abs().max())
                for mine, m, t in zip(our_masks, our_layers, their_layers, strict=True)
            )
            g_diff = max(
                float((m.scores.grad - s.grad).abs().max())
                for m, s in zip(our_masks, their_scores, strict=True)
            )
        opt_ours.step()
        opt_theirs.step()
        for layer in their_layers:  # the reference's UpdateKthValuesHook.after_train_iter
            layer.set_kthvalues()
        with torch.no_grad():
            s_diff = max(
                float((m.scores - s).abs().max()) for m, s in zip(our_masks, their_scores, strict=True)
            )
            differing = [
                (m.level().to(torch.float32) != _their_level(t), t)
                for m, t in zip(our_masks, their_layers, strict=True)
            ]
            levels = sum(int(d.sum()) for d, _ in differing)
            tied = sum(_at_tie(d, t) for d, t in differing)
            logits = float((ours(images[:64]) - theirs(images[:64])).abs().max())
        print(
            f"{step + 1:4d}  {w_diff:11.3g}  {g_diff:12.3g}  {s_diff:11.3g}  {logits:15.3g}  "
            f"{levels:16d}  {tied:9d}"
        )


def _at_tie(differing: torch.Tensor, layer: nn.Module) -> int:
    """How many differing entries have ``|S|`` exactly at one of the reference's kth values and share
    it with another entry: a tie at a coat's cut, which the reference keeps whole (``|S| ≥ k``) and ptl
    splits to keep its exact count."""
    key = layer.score.abs()
    count = 0
    for value in key[differing].tolist():
        if any(value == float(k) for k in layer.kthvalues) and int((key == value).sum()) > 1:
            count += 1
    return count


def _their_level(layer: nn.Module) -> torch.Tensor:
    """The reference's mask ``Σ_c [|S| ≥ k_c]``, through its own ``GetSubnet``."""
    from src.custom_grad import GetSubnet

    level = torch.zeros_like(layer.score)
    for k in layer.kthvalues:
        level = level + GetSubnet.apply(layer.score.abs(), k, layer.bw_scale)
    return level


def _their_weight(layer: nn.Module) -> torch.Tensor:
    """The weight the reference's forward uses: ``W ⊙ Σ_c m_c · scale``."""
    return layer.weight * _their_level(layer) * layer.scale


if __name__ == "__main__":
    main()
