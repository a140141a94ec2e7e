"""Distribution alignment from running class priors (ReMixMatch's, as USB's ``DistAlignEMAHook``
and ``DistAlignQueueHook``).

The weak-view predictions ``q`` of the unlabeled batch are rescaled by ``p_target / p_model`` and
renormalized, where ``p_model`` is an EMA of the model's mean unlabeled prediction and
``p_target`` either the uniform prior (SoftMatch) or an EMA of the mean labeled prediction
(AdaMatch). CoMatch and SimMatch keep ``p_model`` as the mean of a queue of the last batches'
mean predictions instead (:func:`push_prior`), a queue that starts as zeros. Shared here because
several algorithms align the same way; each algorithm keeps the running priors as its own state.
"""

from __future__ import annotations

import torch

from ptl_cli.engine.distributed import gather_global_batch


@torch.no_grad()
def update_priors(
    p_model: torch.Tensor,
    seen: torch.Tensor,
    p_target: torch.Tensor,
    probs_u: torch.Tensor,
    probs_l: torch.Tensor | None,
    momentum: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The priors after one batch: ``(p_model, seen, p_target)``.

    ``p_model`` starts as the first batch's mean (``seen`` is a 0-dim bool tensor saying whether
    that happened, chosen on the device, so no host sync); afterwards both priors follow an EMA
    with ``momentum``. ``p_target`` is updated only when ``probs_l`` is given. Under ``torchrun``
    the global batch is used, so every rank holds the same priors.
    """
    probs_u = gather_global_batch(probs_u)
    batch = torch.mean(probs_u, dim=0)
    p_model = torch.where(seen, p_model * momentum + batch * (1 - momentum), batch)
    if probs_l is not None:
        probs_l = gather_global_batch(probs_l)
        p_target = p_target * momentum + torch.mean(probs_l, dim=0) * (1 - momentum)
    return p_model, torch.ones_like(seen), p_target


@torch.no_grad()
def push_prior(
    queue: torch.Tensor, ptr: torch.Tensor, probs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(queue, ptr)`` after writing the batch's mean prediction into row ``ptr`` of ``queue``
    (``(length, num_classes)``, zeros at first) and advancing ``ptr`` (a 1-element int64 tensor)
    modulo the length: USB's ``DistAlignQueueHook``, whose ``p_model`` is ``queue.mean(0)``, the
    zero rows of a queue not yet full included. On the device, no host sync; under ``torchrun``
    from the global batch, so every rank holds the same queue."""
    mean = torch.mean(gather_global_batch(probs), dim=0)
    queue = queue.index_copy(0, ptr, mean[None].to(queue.dtype))
    return queue, (ptr + 1) % queue.shape[0]


def align(probs: torch.Tensor, p_model: torch.Tensor, p_target: torch.Tensor) -> torch.Tensor:
    """``probs`` rescaled by ``(p_target + 1e-6) / (p_model + 1e-6)``, rows renormalized."""
    aligned = probs * (p_target + 1e-6) / (p_model + 1e-6)
    return aligned / aligned.sum(dim=-1, keepdim=True)
