"""2×2 max pooling that computes exactly what ``nn.MaxPool2d(2)`` does, without its CPU kernel's branches.

Why: on the CPU, PyTorch's max pooling of a contiguous (NCHW) tensor walks each window with a
data-dependent branch, so its speed depends on the activations. On the quickstart's Conv-2 it was
12 % of a training step; on Conv-6 the supermask network, whose activations are about half zeros
where the dense network's are 85 % zeros, spent 19 ms more per step in it than the dense one
(``docs/scale.md``). Here the two pairwise maxima are elementwise tensor ops (vectorized, the
same speed on any data), and the backward pass is PyTorch's own, fed the indices it would have
computed: the first maximum of each window in row-major order. Values, indices and gradients are
bit-identical to ``F.max_pool2d(x, 2)`` (``tests/models/test_pooling.py``), except which entry
of a window holding NaN receives its gradient.

Only contiguous float tensors on the CPU outside ``torch.compile`` take this path; everything else
(accelerators, channels_last, which PyTorch already vectorizes, compiled graphs) calls
``nn.MaxPool2d``'s own forward.
"""

from __future__ import annotations

import torch
from torch import nn

_base_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def _window_origins(rows: int, cols: int, width: int) -> torch.Tensor:
    """Flat index (within one H×W plane) of each output's window's top-left input: ``2i·W + 2j``."""
    key = (rows, cols, width)
    if key not in _base_cache:
        _base_cache[key] = torch.arange(rows).mul_(2 * width)[:, None] + torch.arange(cols).mul_(2)
    return _base_cache[key]


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        rows, cols = height // 2, width // 2
        inside = x[..., : 2 * rows, : 2 * cols]  # an odd last row or column is dropped, as floor mode does
        left, right = inside[..., 0::2], inside[..., 1::2]
        pairs = torch.maximum(left, right).unflatten(2, (rows, 2))  # (N, C, H/2, 2, W/2)
        top, bottom = pairs[:, :, :, 0], pairs[:, :, :, 1]
        out = torch.maximum(top, bottom)
        if ctx.needs_input_grad[0]:
            # ties go to the earlier entry (strict comparisons), as PyTorch's kernel does
            right_wins = (right > left).unflatten(2, (rows, 2))
            bottom_wins = bottom > top
            even, odd = right_wins[:, :, :, 0], right_wins[:, :, :, 1]
            right_of_chosen_row = even ^ (bottom_wins & (odd ^ even))
            index = torch.add(_window_origins(rows, cols, width), bottom_wins, alpha=width)
            ctx.save_for_backward(x, index.add_(right_of_chosen_row))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, index = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, index
        )


def _branch_free(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.is_floating_point()
        and x.is_contiguous()
        and x.shape[-2] >= 2
        and x.shape[-1] >= 2
        and not torch.compiler.is_compiling()
    )


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` (a subclass, with the same results) with the branch-free forward."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MaxPool2x2.apply(x) if _branch_free(x) else super().forward(x)
