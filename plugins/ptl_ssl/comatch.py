"""CoMatch (Li, Xiong & Hoi, ICCV 2021): pseudo labels and a contrastive embedding graph that
regularize each other, through a memory queue of past embeddings and predictions.

A projection head ``g`` (an MLP, :meth:`CoMatch.heads`) maps the penultimate features to
L2-normalized embeddings ``z``. One forward pass over the labeled weak view and the unlabeled
weak and two strong views gives logits and embeddings. Without gradient:

- ``q = softmax(f(weak(x_u)))`` is distribution-aligned towards the uniform prior, ``p_model``
  being the mean of a queue of the last ``da_len`` batch means (:func:`ptl_ssl.distalign.push_prior`);
- memory smoothing: once the memory queue has been filled (``step > queue_batch``),
  ``q <- alpha q + (1 - alpha) softmax(z_w Z^T / T) P`` over the queued embeddings ``Z`` and
  probabilities ``P``;
- the queue (``queue_batch`` global batches long) takes the weak embeddings of the unlabeled
  batch with their aligned, unsmoothed ``q`` and those of the labeled batch with their one-hot
  labels, overwriting the oldest entries;
- the pseudo-label graph ``W = q q^T`` with ones on the diagonal, edges below
  ``contrast_threshold`` cut, rows normalized.

``L = CE(f(weak(x_l)), y_l) + lambda_u * mean_u[ 1(max q >= tau) * CE(q, f(strong(x_u))) ]
+ lambda_c * mean_i[ -sum_j W_ij log softmax_j(z_s0 z_s1^T / T) ]`` (soft targets ``q``; the
embedding similarities between the two strong views are ``exp(z z'/T)`` normalized per row, as
USB, whose ``+ 1e-7`` inside the log is kept).

``tests/ssl/test_reference_comatch.py`` checks several steps, with the queue filling and
wrapping around, against USB's ``CoMatch.train_step`` (semilearn 0.3.2). The deliberate
differences, each tested there:

- memory smoothing starts at ``step > queue_batch``, when the queue has been filled; USB also
  waits for the end of its first epoch (``epoch > 0``), a notion of its loop (1024 steps in its
  CIFAR configs) that ptl's step-based loop does not have;
- the defaults are USB's CIFAR benchmark configuration (``T = 0.2``, ``proj_size = 64``,
  ``queue_batch = 5``, ``da_len = 32``, ``smoothing_alpha = 0.9``: the paper's CIFAR settings),
  not the argument defaults of USB's command line (``T = 0.5``, 128, 128, 256), which no USB
  result uses; USB's ``hard_label`` is not offered: its CoMatch never reads it (targets are soft).

Under ``torchrun`` both queues take the global batch gathered from every rank, so 2 ranks hold
what 1 process holds (``tests/scale/dist_worker.py``); USB gathers the same, and on one node
sizes its queue from the whole batch too (it is built before USB splits the batch over its GPUs).
As in USB, the label graph and the losses are each rank's own batch (DDP averages the gradients).
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.distributed import gather_global_batch
from ptl_ssl.common import TensorState, check_logits, loss_logs, projection_head, view, with_heads
from ptl_ssl.distalign import align, push_prior
from ptl_ssl.softmatch import weighted_cross_entropy


def contrastive_loss(
    z0: torch.Tensor, z1: torch.Tensor, graph: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``mean_i[ -sum_j graph_ij log(softmax_j(z0_i . z1_j / T) + 1e-7) ]``: the embeddings of one
    strong view should be as similar to the other's as the pseudo-label graph says."""
    similarity = torch.softmax((z0 @ z1.t()).float() / temperature, dim=1)
    return -(torch.log(similarity + 1e-7) * graph).sum(dim=1).mean()


def label_graph(probs: torch.Tensor, cutoff: float) -> torch.Tensor:
    """``q q^T`` with a self-loop on every sample, edges below ``cutoff`` cut, rows normalized."""
    graph = probs @ probs.t()
    graph.fill_diagonal_(1)
    graph = graph * (graph >= cutoff).to(graph.dtype)
    return graph / graph.sum(dim=1, keepdim=True)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device``: the targets (alignment, smoothing, the label graph and its
    cutoff) are computed in float32 under mixed precision too, as the losses' inputs are."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class CoMatch(TensorState):
    """CoMatch's losses, its projection head, memory queue and distribution-alignment queue."""

    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong", "strong")
    state_dtypes: ClassVar[dict[str, torch.dtype]] = {
        "queue_feats": torch.float32,
        "queue_probs": torch.float32,
        "queue_ptr": torch.int64,
        "prior_queue": torch.float32,
        "prior_ptr": torch.int64,
    }

    def __init__(
        self,
        num_classes: int,
        threshold: float = 0.95,
        lambda_u: float = 1.0,
        contrast_threshold: float = 0.8,
        lambda_c: float = 1.0,
        temperature: float = 0.2,
        proj_size: int = 64,
        queue_batch: int = 5,
        smoothing_alpha: float = 0.9,
        da_len: int = 32,
    ) -> None:
        self.num_classes = num_classes
        self.threshold = threshold
        self.lambda_u = lambda_u
        self.contrast_threshold = contrast_threshold
        self.lambda_c = lambda_c
        self.temperature = temperature
        self.proj_size = proj_size
        self.queue_batch = queue_batch
        self.smoothing_alpha = smoothing_alpha
        self.da_len = da_len
        # the memory queue is sized at the first step, from the global batch (empty until then)
        self.queue_feats = torch.zeros(0, proj_size)
        self.queue_probs = torch.zeros(0, num_classes)
        self.queue_ptr = torch.zeros(1, dtype=torch.int64)
        self.prior_queue = torch.zeros(da_len, num_classes)
        self.prior_ptr = torch.zeros(1, dtype=torch.int64)

    def heads(self, feature_dim: int) -> dict[str, nn.Module]:
        """The projection MLP, trained with the network (``ptl_cli.engine.heads``)."""
        return {"proj": projection_head(feature_dim, self.proj_size)}

    @torch.no_grad()
    def _push(self, feats: torch.Tensor, probs: torch.Tensor) -> None:
        """Write the global batch's embeddings and probabilities over the oldest queue entries."""
        if self.queue_feats.shape[0] == 0:
            size = self.queue_batch * feats.shape[0]
            self.queue_feats = feats.new_zeros(size, feats.shape[1])
            self.queue_probs = probs.new_zeros(size, probs.shape[1])
        size = self.queue_feats.shape[0]
        rows = (self.queue_ptr + torch.arange(feats.shape[0], device=feats.device)) % size
        self.queue_feats = self.queue_feats.index_copy(0, rows, feats)
        self.queue_probs = self.queue_probs.index_copy(0, rows, probs)
        self.queue_ptr = (self.queue_ptr + feats.shape[0]) % size

    @torch.no_grad()
    def _targets(
        self,
        logits_weak: torch.Tensor,
        z_weak: torch.Tensor,
        z_labeled: torch.Tensor,
        targets: torch.Tensor,
        step: int,
    ) -> torch.Tensor:
        """Aligned (then, once the queue is full, memory-smoothed) soft pseudo labels; the queues
        take in this batch."""
        probs = torch.softmax(logits_weak.detach().float(), dim=-1)
        self.prior_queue, self.prior_ptr = push_prior(self.prior_queue, self.prior_ptr, probs)
        uniform = torch.full_like(self.prior_queue[0], 1.0 / self.num_classes)
        aligned = align(probs, self.prior_queue.mean(dim=0), uniform)
        smoothed = aligned
        if step > self.queue_batch:
            affinity = torch.softmax(z_weak @ self.queue_feats.t() / self.temperature, dim=1)
            alpha = self.smoothing_alpha
            smoothed = alpha * aligned + (1 - alpha) * affinity @ self.queue_probs
        one_hot = F.one_hot(targets, self.num_classes).float()
        feats = torch.cat([gather_global_batch(z_weak), gather_global_batch(z_labeled)])
        self._push(feats, torch.cat([gather_global_batch(aligned), gather_global_batch(one_hot)]))
        return smoothed

    def loss(
        self,
        model: nn.Module,
        labeled: dict[str, torch.Tensor],
        targets: torch.Tensor,
        unlabeled: dict[str, torch.Tensor],
        step: int,
        total_steps: int,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batches = [
            view(labeled, "weak", "CoMatch", "labeled"),
            *(view(unlabeled, name, "CoMatch", "unlabeled") for name in ("weak", "strong", "strong:1")),
        ]
        out = with_heads(model, torch.cat(batches), "proj", "CoMatch")
        sizes = [b.shape[0] for b in batches]
        logits_x, logits_weak, logits_strong, _ = out["logits"].split(sizes)
        check_logits(logits_x, self.num_classes, "CoMatch")
        z = F.normalize(out["proj"].float(), dim=1)
        z_x, z_weak, z_s0, z_s1 = z.split(sizes)
        self._follow(logits_weak.device)

        with full_precision(logits_weak.device):
            probs = self._targets(logits_weak, z_weak.detach(), z_x.detach(), targets, step)
            graph = label_graph(probs, self.contrast_threshold)
        mask = (probs.max(dim=-1).values >= self.threshold).float()
        loss_x = F.cross_entropy(logits_x, targets)
        loss_u = weighted_cross_entropy(logits_strong, probs, mask)
        loss_c = contrastive_loss(z_s0, z_s1, graph, self.temperature)
        loss = loss_x + self.lambda_u * loss_u + self.lambda_c * loss_c
        return loss, loss_logs(loss_x, loss_u, loss_contrast=loss_c.detach(), mask_ratio=mask.mean())
