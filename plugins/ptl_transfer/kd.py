"""The knowledge-distillation baseline's loss: an auxiliary ``K_s``-way head matched to ``C_s``.

The target network gets a second head (:func:`ptl_transfer.nets.aux_head`) on the features of
its ``K_t`` head; on target images it is trained towards the source classifier's output on the
same images, in one of two ways:

* ``"kl"`` -- soft targets (Hinton et al. 2015): ``T² · KL(softmax(t/T) ‖ softmax(a/T))``. The
  ``T²`` keeps the gradient's scale independent of ``T``, so ``kd.weight`` means the same at any
  temperature.
* ``"logits"`` -- logit matching (Ba & Caruana 2014): ``mean((a - t)²)`` over batch and classes.

Kept in its own file so that the definition can be checked on fixed logits, apart from the loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MODES = ("kl", "logits")


def kd_loss(aux: torch.Tensor, teacher: torch.Tensor, mode: str, temperature: float = 1.0) -> torch.Tensor:
    """The distillation term for student logits ``aux`` and teacher logits ``teacher`` (no gradient).

    Computed in float32 whatever the autocast precision: the KL of two nearly equal soft
    distributions is a small difference of large terms.
    """
    aux, teacher = aux.float(), teacher.detach().float()
    if mode == "kl":
        return F.kl_div(
            F.log_softmax(aux / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (temperature * temperature)
    if mode == "logits":
        return F.mse_loss(aux, teacher)
    raise ValueError(f"unknown KD mode {mode!r}; choose from {', '.join(MODES)}")
