"""One training step of an SSL algorithm, written once for every caller.

The transfer workflow's loop, ``ptl bench transfer`` and :func:`ptl_cli.testing.check_ssl` all
call :class:`SSLStep`, so the step a contract check exercises and a benchmark times is the step a
run takes. It knows no algorithm: it only uses the SSL protocol (``labeled_views``,
``unlabeled_views``, ``loss``, ``after_step``), and is handed the view maker
(:func:`ptl_cli.data.views.make_views` with the dataset's statistics).

Random numbers are drawn in this order, which resumed and data-parallel runs rely on: the
labeled views, the unlabeled views (both inside ``augmenting()``), the loss (inside
``augmenting()`` and autocast: a loss may draw too), then the optimizer step, the scheduler,
``after_step`` and the EMA update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

#: ``views(images, names) -> {key: view}``: the views ``names`` of a batch of images.
Views = Callable[[torch.Tensor, tuple[str, ...]], dict[str, torch.Tensor]]


@dataclass
class SSLStep:
    """``step(i, images, targets, unlabeled, unlabeled_index, labeled_index) -> (loss, logs)`` for
    one algorithm.

    ``model`` is the network being trained (the EMA follows it); ``train_model`` is what the loss
    calls (a DDP or compiled wrapper of it, or ``model`` itself). Without ``precision`` the step is
    a plain fp32 ``backward()`` + ``optimizer.step()``; without a scheduler or EMA those are skipped.
    ``unlabeled_index`` and ``labeled_index`` reach ``loss`` only when the algorithm declares them
    (docs/plugins/reference.md). An algorithm with ``heads`` gets its network wrapped by the
    caller (:func:`ptl_cli.engine.heads.attach`) before ``model`` is built from it.
    """

    algo: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    views: Views
    total_steps: int
    precision: Any = None
    scheduler: Any = None
    ema: Any = None
    train_model: torch.nn.Module | None = None
    augmenting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    _declared: frozenset[str] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        from ptl_cli.contracts import optional_arguments

        if self.train_model is None:
            self.train_model = self.model
        indices = {"unlabeled_index": None, "labeled_index": None}
        self._declared = frozenset(optional_arguments("ssl", "loss", self.algo.loss, indices))

    def __call__(
        self,
        step: int,
        images: torch.Tensor,
        targets: torch.Tensor,
        unlabeled: torch.Tensor | None = None,
        unlabeled_index: torch.Tensor | None = None,
        labeled_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        algo = self.algo
        with self.augmenting():
            labeled = self.views(images, algo.labeled_views)
            views_u = self.views(unlabeled, algo.unlabeled_views) if unlabeled is not None else {}
        given = {"unlabeled_index": unlabeled_index, "labeled_index": labeled_index}
        extra = {k: v for k, v in given.items() if k in self._declared}
        autocast = self.precision.autocast() if self.precision is not None else contextlib.nullcontext()
        with self.augmenting(), autocast:
            out = algo.loss(self.train_model, labeled, targets, views_u, step, self.total_steps, **extra)
        loss, logs = out
        self.optimizer.zero_grad(set_to_none=True)
        if self.precision is not None:
            self.precision.backward_and_step(loss, self.optimizer)
        else:
            loss.backward()
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        algo.after_step(self.train_model, step)
        if self.ema is not None:
            self.ema.update(self.model, step)
        return loss, logs
