"""Signed supermask (Koster et al., ICLR 2022): keep, hide or invert each random weight.

The mask takes values in {−1, 0, 1}: a pruned layer computes with ``W ⊙ m`` where ``m = sign(S)``
on the kept weights and 0 elsewhere, so a kept weight is used as drawn or with its sign flipped,
never rescaled. Only the scores train.

Choices made here (each tested in tests/prune/test_slt_family.py; the mask and gradient rule match
the reference's TensorFlow layers, ``benchmarks/signed_reference.py``):

* which weights are kept: the top ``1 - p`` of ``|S|`` per layer (or globally), edge-popup's
  exact count — the sparsity is a setting, where in the paper it emerges from a threshold;
* the sign of a kept weight's mask is that of its score, with ``S = 0`` counted as ``+1``;
* the gradient is straight through the signed mask: ``dL/dS = dL/dŴ ⊙ W`` (no ``sign(S)`` factor,
  unlike edge-popup's ``|S|`` ranking: pushing ``S`` up pushes the mask towards ``+1``);
* weights default to Kaiming uniform: the paper's ELUS initialization is derived for ELU networks,
  and ptl's models use ReLU.

Exports write ``W ⊙ m``; a ticket stores ``m`` as integer levels (a 1-bit mask and one sign bit per
kept weight) and rebuilds it bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ptl_cli.pruning import TicketSpec
from ptl_prune import supermask
from ptl_prune.iterand import IteRand
from ptl_prune.mpt import dense_with


def signed_weight(weight: torch.Tensor, scores: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``W ⊙ m`` with ``m = sign(S)`` (0 counted as +1) where kept, exact 0 elsewhere."""
    zero = torch.zeros((), dtype=weight.dtype, device=weight.device)
    return torch.where(kept, torch.where(scores < 0, -weight, weight), zero)


class _SignedWeight(torch.autograd.Function):
    """``W ⊙ m`` forward; ``dL/dS = g ⊙ W`` (straight through the {−1, 0, 1} mask) backward."""

    @staticmethod
    def forward(ctx, weight, scores, kept):  # type: ignore[override]
        ctx.save_for_backward(weight)
        return signed_weight(weight, scores.detach(), kept)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        return None, (grad * weight if ctx.needs_input_grad[1] else None), None


class SignedSupermask(supermask.Supermask):
    """The parametrization: ranks ``|S|`` and maps the frozen ``W`` to ``W ⊙ sign(S) ⊙ m(|S|)``."""

    def __init__(self, scores: torch.Tensor, sparsity: float, score_abs: bool = True) -> None:
        super().__init__(scores, sparsity, score_abs=True)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _SignedWeight.apply(weight, self.full_scores(), self.kept())

    def signs(self) -> torch.Tensor:
        """The mask in {−1, 0, 1} (int8)."""
        with torch.no_grad():
            kept = self.kept()
            sign = torch.where(self.full_scores() < 0, -1, 1).to(torch.int8)
            return torch.where(kept, sign, torch.zeros_like(sign))

    def dense(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return signed_weight(weight, self.full_scores().detach(), self.kept())


class SignedSupermaskPruner(IteRand):
    """A pruner (see :class:`ptl_cli.contracts.Pruner`): edge-popup with masks in {−1, 0, 1}
    (an :class:`IteRand` with re-draws off unless ``rerand_lambda`` > 0)."""

    method = "signed-supermask"
    supermask_kind = SignedSupermask

    def __init__(self, score_abs: bool = True, rerand_lambda: float = 0.0, **iterand: Any) -> None:
        super().__init__(score_abs=True, rerand_lambda=rerand_lambda, **iterand)

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return dense_with(model, supermask.dense_state_dict(model))

    def ticket_spec(self, model: nn.Module) -> TicketSpec:
        """IteRand's declaration with the masks in {−1, 0, 1} (int8 levels): the ticket rebuilds
        ``W ⊙ m``, a flipped weight as ``W · (−1)``, which is ``−W`` exactly."""
        spec = super().ticket_spec(model)
        masks = {name: mask.signs() for _, name, _, mask in supermask.masked_layers(model)}
        return dataclasses.replace(spec, masks=masks)
