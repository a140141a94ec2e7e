"""SimMatch (Zheng et al., CVPR 2022): semantic and instance similarity, through a memory bank of
the labeled samples' embeddings.

A projection head ``g`` (an MLP, :meth:`SimMatch.heads`) maps the penultimate features to
L2-normalized embeddings ``z``. One forward pass over the labeled weak view and the unlabeled
weak and strong views gives logits and embeddings. The bank holds one embedding per labeled
sample (``(proj_size, num_labeled)``, found by ``labeled_index``) and its label. Without
gradient:

- ``q = softmax(f(weak(x_u)))`` is distribution-aligned towards the uniform prior, ``p_model``
  being the mean of a queue of the last ``da_len`` batch means (:func:`ptl_ssl.distalign.push_prior`);
- the weak embedding's similarities to the bank, ``a = softmax(z_w B / T)``, are scaled by ``q``
  of each bank entry's label and renormalized: the instance pseudo label ``a^``;
- label propagation: ``q <- alpha q + (1 - alpha) sum_{bank entries of class c} a``.

``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ 1(max q >= tau) * CE(q, f(strong(x_u))) ]
+ lambda_in * mean_u[ CE(a^, softmax(z_s B / T)) ]``. Then the labeled batch's embeddings go
into the bank at their indices: ``B[:, i] <- normalize(m B[:, i] + (1 - m) z_x)`` with
``m = bank_momentum`` (USB's CIFAR rule), or ``B[:, i] <- z_x`` of an EMA teacher with
``ema_teacher`` (USB's rule for its other datasets).

``tests/ssl/test_reference_simmatch.py`` checks several steps, the bank filling and samples
coming back, against USB's ``SimMatch.train_step`` (semilearn 0.3.2). The deliberate
differences, each tested there:

- the similarity loss and the propagation start once the bank holds every labeled sample (a
  per-sample ``filled`` flag, state); USB starts them after its first epoch (``epoch > 0``), a
  notion of its loop (1024 steps in its configs, by then every labeled sample has long been
  written) that ptl's step-based loop does not have. Before, as in USB, ``q`` is the aligned
  prediction and the similarity loss is zero;
- the defaults are USB's CIFAR configuration (``config/classic_cv/simmatch``: ``T = 0.1``,
  ``da_len = 32``, the momentum bank), not its command-line defaults (``T = 0.5``,
  ``da_len = 256``), which no USB result uses; the bank's size is the labeled set's, as USB
  sets ``K`` from its labeled set;
- the bank starts as random unit vectors drawn from a generator seeded with 0 on the CPU (USB
  draws them from the global CUDA RNG when it is built): the same on every rank and in every
  stage, independent of what ran before; they fade as ``bank_momentum`` per write.
- The EMA teacher (``ema_teacher = True``) is the algorithm's own: a copy of the wrapped model
  (network and projection head) made at the first step, its parameters following the student's
  as ``teacher <- d teacher + (1 - d) student`` with USB's constant ``teacher_decay`` after
  every step, in ``state_dict``. It is not the loop's EMA because the loop's EMA is not given to
  an algorithm (no argument of the contract passes it) and follows another rule (a warm-up and
  ``train.ema_decay``, for evaluation); USB's teacher is its evaluation EMA with a constant
  decay, which this copy reproduces. Its forward (train mode, as USB's) runs on its own
  buffers, so unlike USB's ``apply_shadow`` it does not move the student's BatchNorm statistics.

Kept as USB has it: the momentum update normalizes the blended bank columns with
``F.normalize``'s default ``dim=1``, i.e. each embedding coordinate over the batch's columns,
not each embedding (so the written entries are not unit vectors); the similarity loss uses
``log(softmax)``; the propagation's ``alpha`` and the mask use the propagated ``q``.

Under ``torchrun`` the bank, its labels, the ``filled`` flags and the alignment queue are
updated from the global batch (``gather_global_batch``), so every rank holds what one process
holds; the losses are each rank's own batch (DDP averages the gradients), as in USB.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import (
    EMATeacher,
    TensorState,
    check_logits,
    loss_logs,
    projection_head,
    view,
    with_heads,
)
from ptl_ssl.distalign import align, push_prior
from ptl_ssl.softmatch import weighted_cross_entropy

#: The seed of the bank's initial random embeddings (see the module docstring).
BANK_SEED = 0


class SimMatch(TensorState):
    """SimMatch's losses, its projection head, labeled memory bank and alignment queue."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "bank": torch.float32,
        "bank_labels": torch.int64,
        "filled": torch.bool,
        "prior_queue": torch.float32,
        "prior_ptr": torch.int64,
    }

    def __init__(
        self,
        num_classes: int,
        num_labeled: int = 0,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        lambda_in: float = 1.0,
        temperature: float = 0.1,
        proj_size: int = 128,
        smoothing_alpha: float = 0.9,
        da_len: int = 32,
        bank_momentum: float = 0.7,
        ema_teacher: bool = False,
        teacher_decay: float = 0.999,
    ) -> None:
        self.num_classes = num_classes
        self.num_labeled = num_labeled
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.lambda_in = lambda_in
        self.temperature = temperature
        self.proj_size = proj_size
        self.smoothing_alpha = smoothing_alpha
        self.da_len = da_len
        self.bank_momentum = bank_momentum
        self.ema_teacher = ema_teacher
        self.teacher_decay = teacher_decay
        start = torch.randn(proj_size, num_labeled, generator=torch.Generator().manual_seed(BANK_SEED))
        self.bank = F.normalize(start, dim=0)
        self.bank_labels = torch.zeros(num_labeled, dtype=torch.int64)
        self.filled = torch.zeros(num_labeled, dtype=torch.bool)
        self.prior_queue = torch.zeros(da_len, num_classes)
        self.prior_ptr = torch.zeros(1, dtype=torch.int64)
        self._ema = EMATeacher(teacher_decay, "SimMatch")

    def heads(self, feature_dim: int) -> dict[str, nn.Module]:
        """The projection MLP, trained with the network (``ptl_cli.engine.heads``)."""
        return {"proj": projection_head(feature_dim, self.proj_size)}

    # -- the EMA teacher (ema_teacher only) ----------------------------------------------------
    @property
    def teacher(self) -> nn.Module | None:
        """The EMA teacher, once the first ``loss`` has copied it from the student."""
        return self._ema.model

    def after_step(self, model: nn.Module, step: int) -> None:
        """Move the EMA teacher's parameters towards the student's (USB's constant decay)."""
        self._ema.update(model)

    # -- the bank ------------------------------------------------------------------------------
    @torch.no_grad()
    def _write(self, z_x: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> None:
        """The global labeled batch's embeddings and labels into the bank at their indices."""
        z_x, targets, index = (gather_global_batch(t) for t in (z_x, targets, index))
        if self.ema_teacher:
            columns = z_x.t()
        else:  # USB's F.normalize default dim=1: over the batch's columns (module docstring)
            m = self.bank_momentum
            columns = F.normalize(m * self.bank[:, index] + (1 - m) * z_x.t(), dim=1)
        self.bank = self.bank.index_copy(1, index, columns.to(self.bank.dtype))
        self.bank_labels = self.bank_labels.index_copy(0, index, targets)
        self.filled = self.filled.index_fill(0, index, True)

    @torch.no_grad()
    def _targets(
        self, logits_weak: torch.Tensor, z_weak: torch.Tensor, ready: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q, a^)``: the aligned (then, once the bank is ready, propagated) pseudo labels and
        the instance pseudo labels over the bank; the alignment queue takes in this batch."""
        probs = torch.softmax(logits_weak.detach().float(), dim=-1)
        self.prior_queue, self.prior_ptr = push_prior(self.prior_queue, self.prior_ptr, probs)
        uniform = torch.full_like(self.prior_queue[0], 1.0 / self.num_classes)
        aligned = align(probs, self.prior_queue.mean(dim=0), uniform)
        similarity = torch.softmax(z_weak @ self.bank / self.temperature, dim=1)
        labels = self.bank_labels.expand(z_weak.shape[0], -1)
        instance = similarity * aligned.gather(1, labels)
        instance = instance / instance.sum(dim=1, keepdim=True)
        propagated = aligned
        if self.smoothing_alpha < 1:
            by_class = torch.zeros_like(aligned).scatter_add(1, labels, similarity)
            propagated = aligned * self.smoothing_alpha + by_class * (1 - self.smoothing_alpha)
        return torch.where(ready, propagated, aligned), instance

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
        labeled_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if labeled_index is None or self.num_labeled <= 0:
            raise ValueError(
                "SimMatch keeps a bank entry per labeled sample: it needs num_labeled (factory) and "
                "labeled_index (loss), which ptl passes to algorithms that declare them"
            )
        x = view(labeled, "weak", "SimMatch", "labeled")
        u_weak = view(unlabeled, "weak", "SimMatch", "unlabeled")
        u_strong = view(unlabeled, "strong", "SimMatch", "unlabeled")
        teacher = self._ema.of(model) if self.ema_teacher else None
        out = with_heads(model, torch.cat([x, u_weak, u_strong]), "proj", "SimMatch")
        sizes = [x.shape[0], u_weak.shape[0], u_strong.shape[0]]
        logits_x, logits_weak, logits_strong = out["logits"].split(sizes)
        check_logits(logits_x, self.num_classes, "SimMatch")
        z_x, z_weak, z_strong = F.normalize(out["proj"].float(), dim=1).split(sizes)
        self._follow(logits_x.device)
        if teacher is not None:
            teacher.train(model.training)
            with torch.no_grad():
                z_x = F.normalize(with_heads(teacher, x, "proj", "SimMatch")["proj"].float(), dim=1)

        loss_x = F.cross_entropy(logits_x, targets)
        ready = self.filled.all()  # before this batch is written: USB's "after the first epoch"
        probs, instance = self._targets(logits_weak, z_weak.detach(), ready)
        log_student = F.log_softmax(z_strong @ self.bank / self.temperature, dim=1)
        loss_in = torch.where(ready, -(instance * log_student).sum(dim=1).mean(), 0.0)
        mask = (probs.max(dim=1).values >= self.threshold).float()
        loss_u = weighted_cross_entropy(logits_strong.float(), probs, mask)
        loss = loss_x + self.lambda_u * loss_u + self.lambda_in * loss_in
        self._write(z_x.detach(), targets, labeled_index)
        return loss, loss_logs(loss_x, loss_u, loss_in=loss_in.detach(), mask_ratio=mask.mean())

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The bank, its labels and flags, the alignment queue, and the EMA teacher if any."""
        state = super().state_dict()
        saved = self._ema.state()
        if saved is not None:
            state["teacher"] = saved
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._ema.load(state.get("teacher"))
