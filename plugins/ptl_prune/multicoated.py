"""Multicoated supermasks (Okoshi et al., ICML 2022): several nested masks overlaid on one layer.

Coat ``c`` keeps the top ``1 - p_c`` of a layer's ``|S|`` (``p_0 = sparsity < p_1 < …``); the
forward uses ``W ⊙ M`` with ``M = Σ_c m_c`` ∈ {0, 1, …, C}: a weight whose score clears more
thresholds counts more times. The sparsity of the network is that of the first coat; the further
coats only grade the weights it keeps. Only the scores train.

As in the reference code (yasu0001/multicoated-supermasks), each coat is a straight-through step,
so the score gradient is the sum over coats: ``dL/dS = C · dL/dŴ ⊙ W`` (times ``sign(S)``, ``|S|``
being ranked); with the reference's counts the two were bit-identical over the 20 steps measured
(``benchmarks/multicoated_reference.py``). Differences, documented: every coat prunes exactly
``round(p_c·n)`` (the reference keeps every score at or above the sorted entry
``1 + floor(p_c·(n - 1))``, ties included); the reference's ``Sign`` init, weights
``±√(2/(fan_in·(1 - p_0)))`` (their sign times a per-layer scale), is not applied: BatchNorm after
every convolution undoes a layer's scale, so only the last layer's logits would differ; coats rank
each layer on its own, so ``sparsity_scope = "global"`` is refused. A layer with its own rate
``r`` (``layer_sparsity``) keeps, in coat ``c``, the share ``(1 - p_c)/(1 - p_0)`` of its ``1 - r``.

Exports write ``W ⊙ M``; a ticket stores ``M`` as integer levels (one nested bit plane per coat) and
rebuilds it bit for bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ptl_cli.errors import UserError
from ptl_cli.pruning import TicketSpec
from ptl_prune import supermask
from ptl_prune.iterand import IteRand
from ptl_prune.mpt import dense_with


class _CoatedWeight(torch.autograd.Function):
    """``W ⊙ M`` forward; ``dL/dS = C · g ⊙ W`` (times ``sign(S)`` with ``score_abs``) backward."""

    @staticmethod
    def forward(ctx, weight, scores, level, coats, score_abs):  # type: ignore[override]
        ctx.coats, ctx.score_abs = coats, score_abs
        ctx.save_for_backward(weight, scores if score_abs else None)
        zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
        return torch.where(level > 0, weight * level.to(weight.dtype), zero)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        weight, scores = ctx.saved_tensors
        grad_scores = None
        if ctx.needs_input_grad[1]:
            grad_scores = grad * weight * ctx.coats
            if ctx.score_abs:
                grad_scores = torch.where(scores < 0, -grad_scores, grad_scores)
        return None, grad_scores, None, None, None


class MulticoatedSupermask(supermask.Supermask):
    """The parametrization: ``W ⊙ Σ_c m_c(|S|)``; ``coat_pruned`` holds the further coats' counts."""

    def __init__(self, scores: torch.Tensor, sparsity: float, score_abs: bool = True) -> None:
        super().__init__(scores, sparsity, score_abs)
        self.coat_pruned: list[int] = []  # set by the pruner once the layer's rate is known

    def level(self) -> torch.Tensor:
        """How many coats keep each weight (uint8, 0 = pruned)."""
        key = self.key()
        level = self.kept().to(torch.uint8)
        for pruned in self.coat_pruned:
            level += supermask.kept_mask(key, pruned).to(torch.uint8)
        return level

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        coats = 1 + len(self.coat_pruned)
        return _CoatedWeight.apply(weight, self.scores, self.level(), coats, self.score_abs)

    def dense(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            level = self.level()
            zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
            return torch.where(level > 0, weight * level.to(weight.dtype), zero)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, coat_pruned={self.coat_pruned}"


class Multicoated(IteRand):
    """A pruner (see :class:`ptl_cli.contracts.Pruner`): edge-popup with C nested, summed masks
    (an :class:`IteRand` with re-draws off unless ``rerand_lambda`` > 0: the first coat's pruned
    weights are then re-drawn)."""

    method = "multicoated"
    supermask_kind = MulticoatedSupermask

    def __init__(
        self,
        coat_sparsity: Sequence[float] | None = None,  # None: the schema's (DEFAULT_COATS)
        sparsity: float = 0.7,
        score_abs: bool = True,
        weight_init: str = "signed_constant",
        sparsity_scope: str = "layer",
        rerand_lambda: float = 0.0,
        **iterand: Any,
    ) -> None:
        if iterand.get("frozen_pruned") or iterand.get("frozen_kept"):
            raise UserError(
                "pruner 'multicoated' does not search part of a frozen network: its coats would rank "
                "the frozen weights too; set frozen_pruned and frozen_kept to 0"
            )
        if sparsity_scope != "layer":
            raise UserError(
                "pruner 'multicoated' ranks each layer's coats on their own: sparsity_scope must be 'layer'"
            )
        from ptl_prune.params import DEFAULT_COATS

        coats = [float(p) for p in (DEFAULT_COATS if coat_sparsity is None else coat_sparsity)]
        if any(not sparsity < p < 1.0 for p in coats) or coats != sorted(set(coats)):
            raise UserError(
                f"pruner 'multicoated': coat_sparsity {coats} must rise strictly, each above sparsity "
                f"{sparsity} and below 1"
            )
        super().__init__(
            sparsity=sparsity,
            score_abs=score_abs,
            weight_init=weight_init,
            rerand_lambda=rerand_lambda,
            **iterand,
        )
        self.coat_sparsity = coats

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        super().prepare(model, seed)
        layers = supermask.prunable_layers(model)
        for index, name, _, mask in supermask.masked_layers(model):
            kept = 1.0 - self.layer_rate(name, index, len(layers))
            n = mask.scores.numel()
            shares = [(1.0 - p) / (1.0 - self.rate) for p in self.coat_sparsity]
            mask.coat_pruned = [supermask.num_pruned(n, 1.0 - kept * share) for share in shares]
        return model

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return dense_with(model, supermask.dense_state_dict(model))

    def ticket_spec(self, model: nn.Module) -> TicketSpec:
        """IteRand's declaration with the masks as levels ``M`` ∈ {0, …, C} (how many coats keep each
        weight): the ticket stores them as nested bit planes, one per coat, and rebuilds ``W ⊙ M``."""
        spec = super().ticket_spec(model)
        masks = {name: mask.level() for _, name, _, mask in supermask.masked_layers(model)}
        return dataclasses.replace(spec, masks=masks)
