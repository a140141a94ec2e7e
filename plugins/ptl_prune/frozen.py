"""Partial search in a frozen network (Otsuka et al., "Partially frozen random networks contain
compact strong lottery tickets"): part of each layer is decided before training, the rest searched.

In every pruned layer a seeded fraction ``frozen_pruned`` of the weights is frozen as pruned and a
fraction ``frozen_kept`` as kept; the scores exist only for the remaining weights, and the method's
usual ranking runs over them. Ranked together with the frozen ones (kept at ``+∞``, pruned at
``-∞``, as the reference code ranks them), a layer still prunes exactly ``round(p·n)`` of its
``n`` weights, so the searched part prunes ``round(p·n) - round(frozen_pruned·n)`` of its own.

The saving is memory: the score parameter and its optimizer state (SGD's momentum) hold
``(1 - frozen_pruned - frozen_kept)·n`` entries instead of ``n``; the frozen pattern is one int8
per weight (a buffer rebuilt from the seed, not checkpointed). The forward scatters the scores
into the weight's shape through an int32 index built per forward (transient, freed after the
backward), so every supermask kind — edge-popup's, MPT's, the signed one — works unchanged on top
(:func:`partial` mixes this into the pruner's ``supermask_kind``).

Which weights are frozen is drawn per layer from ``(seed, layer)``: a random permutation, its first
``P`` entries pruned, the next ``K`` kept. How many (``frozen_distribution``, :func:`layer_counts`):

- ``uniform``: ``P = round(frozen_pruned·n)`` and ``K = round(frozen_kept·n)`` in every layer (the
  reference's "epl" distribution);
- ``erk``: Erdős–Rényi-Kernel shaped, the reference's ``m_init_method: erk`` with its
  ``r_method: sparsity_distribution``: the layer's frozen-pruned fraction is the ERK sparsity at
  network-wide sparsity ``frozen_pruned``, its whole frozen fraction the ERK sparsity at
  ``frozen_pruned + frozen_kept``, the kept one their difference. ERK gives a layer of shape
  ``(d_1, ..., d_k)`` a density proportional to ``Σd_i / Πd_i`` (large layers are frozen more,
  small ones less or not at all) so that the densities, weighted by the layers' sizes, average
  to ``1 - f`` exactly: the network-wide fractions are the requested ones, up to each layer's
  rounding (``round(f_l·n)``, half up).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ptl_cli.engine.seeding import generator_for
from ptl_prune import inits, supermask

PRUNED, SEARCHED, KEPT = -1, 0, 1


DISTRIBUTIONS = ("uniform", "erk")


def erk(shapes: list[tuple[int, ...]], fraction: float) -> list[float]:
    """The fraction of each layer (of these shapes) that ERK assigns at network-wide ``fraction``.

    Each layer's complement (its density) is ``ε·Σd_i/Πd_i``, with ``ε`` chosen so that the
    densities times the layer sizes add up to ``(1 - fraction)·N``. A layer whose density would
    reach 1 gets none (fraction 0), and ``ε`` is solved again over the others, largest ratio
    first, until every density is below 1 (the RigL paper's procedure, as the reference runs it).
    """
    sizes = [math.prod(shape) for shape in shapes]
    ratio = [sum(shape) / n for shape, n in zip(shapes, sizes, strict=True)]
    whole: set[int] = set()  # the layers given no fraction
    eps = 0.0
    while len(whole) < len(shapes):
        free = [i for i in range(len(shapes)) if i not in whole]
        target = (1.0 - fraction) * sum(sizes[i] for i in free) - fraction * sum(sizes[i] for i in whole)
        eps = target / sum(ratio[i] * sizes[i] for i in free)
        top = max(ratio[i] for i in free)
        if eps * top < 1.0:
            break
        whole.update(i for i in free if ratio[i] == top)
    return [0.0 if i in whole else 1.0 - eps * ratio[i] for i in range(len(shapes))]


def layer_counts(
    shapes: list[tuple[int, ...]], frozen_pruned: float, frozen_kept: float, distribution: str
) -> list[tuple[int, int]]:
    """``(P, K)`` of each layer: how many of its weights are frozen pruned and frozen kept.

    ``uniform`` rounds each fraction of each layer; ``erk`` rounds the layer's ERK fractions at
    ``frozen_pruned`` and at ``frozen_pruned + frozen_kept``, kept being their difference."""
    sizes = [math.prod(shape) for shape in shapes]
    if distribution == "uniform":
        return [(supermask.num_pruned(n, frozen_pruned), supermask.num_pruned(n, frozen_kept)) for n in sizes]
    if distribution != "erk":
        raise ValueError(f"frozen_distribution {distribution!r}: expected one of {DISTRIBUTIONS}")
    pruned = erk(shapes, frozen_pruned) if frozen_pruned else [0.0] * len(shapes)
    both = erk(shapes, frozen_pruned + frozen_kept) if frozen_kept else pruned
    out = []
    for n, p, f in zip(sizes, pruned, both, strict=True):
        frozen_p, frozen = supermask.num_pruned(n, p), supermask.num_pruned(n, f)
        out.append((frozen_p, max(frozen, frozen_p) - frozen_p))  # f >= p: max only absorbs float noise
    return out


def pattern(
    shape: tuple[int, ...], frozen_pruned: float, frozen_kept: float, seed: int, layer: int
) -> torch.Tensor:
    """The frozen pattern of prunable layer ``layer`` (int8: -1 pruned, 0 searched, +1 kept) with
    ``round(f·n)`` weights of each kind (the uniform distribution)."""
    n = math.prod(shape)
    return pattern_of(
        shape, supermask.num_pruned(n, frozen_pruned), supermask.num_pruned(n, frozen_kept), seed, layer
    )


def pattern_of(shape: tuple[int, ...], pruned: int, kept: int, seed: int, layer: int) -> torch.Tensor:
    """The frozen pattern of layer ``layer`` with ``pruned`` and ``kept`` frozen weights: the first
    entries of a permutation seeded by ``(seed, layer)``, so the kinds never overlap."""
    n = math.prod(shape)
    order = torch.randperm(n, generator=generator_for(seed, inits.FROZEN, layer))
    out = torch.zeros(n, dtype=torch.int8)
    out[order[:pruned]] = PRUNED
    out[order[pruned : pruned + kept]] = KEPT
    return out.view(shape)


class PartialMask(supermask.Supermask):
    """A supermask whose scores cover only the weights the frozen pattern leaves to the search
    (mixed before a concrete kind: ``class X(PartialMask, Kind)``, see :func:`partial`)."""

    def freeze(self, frozen: torch.Tensor) -> None:
        """Keep the scores of the searched weights only and remember the pattern."""
        self.register_buffer("frozen", frozen.to(self.scores.device), persistent=False)
        with torch.no_grad():
            searched = self.scores.detach()[frozen.to(self.scores.device) == SEARCHED].clone()
        self.scores = nn.Parameter(searched)

    def full_scores(self) -> torch.Tensor:
        """The scores scattered into the weight's shape (0 at frozen weights), differentiable:
        the gradient of a searched weight's entry flows back to its score, nothing else does."""
        searched = (self.frozen == SEARCHED).reshape(-1)
        position = searched.cumsum(0, dtype=torch.int32) - 1
        index = torch.where(searched, position, torch.full_like(position, self.scores.numel()))
        padded = torch.cat([self.scores, self.scores.new_zeros(1)])
        return padded.index_select(0, index).view(self.shape)

    def key(self) -> torch.Tensor:
        """The kind's ranking key, with frozen-kept weights at ``+∞`` and frozen-pruned at ``-∞``."""
        key = super().key()
        key = torch.where(self.frozen == KEPT, torch.inf, key)
        return torch.where(self.frozen == PRUNED, -torch.inf, key)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, searched={self.scores.numel()} of {math.prod(self.shape)}"


@functools.cache
def partial(kind: type[supermask.Supermask]) -> type[supermask.Supermask]:
    """``kind`` with its scores limited to the searched weights (one class per kind)."""
    return type(f"Partial{kind.__name__}", (PartialMask, kind), {"__doc__": PartialMask.__doc__})


def score_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of the score parameters, of their optimizer state and of the frozen patterns."""
    scores = [mask.scores for *_, mask in supermask.masked_layers(model)]
    state = 0
    if optimizer is not None:
        for p in scores:
            for value in optimizer.state.get(p, {}).values():
                if torch.is_tensor(value):
                    state += value.numel() * value.element_size()
    patterns = sum(
        mask.frozen.numel() * mask.frozen.element_size()
        for *_, mask in supermask.masked_layers(model)
        if isinstance(mask, PartialMask)
    )
    return {
        "scores": sum(p.numel() * p.element_size() for p in scores),
        "optimizer_state": state,
        "frozen_patterns": patterns,
    }
