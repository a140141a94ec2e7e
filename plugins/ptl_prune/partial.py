"""``partial-search``: edge-popup on a partially frozen random network, under its own name.

The mechanism is two parameters of every edge-popup/IteRand pruner (``frozen_pruned``,
``frozen_kept``; :mod:`ptl_prune.frozen`). This pruner only gives the method a name in
``ptl list pruners`` and the paper's defaults: half of each layer frozen, a quarter as pruned and
a quarter as kept (the reference's Conv-6 example, "50% freezing ratio, 25% pruning : 25%
locking"), ``|S|`` ranked over all layers at once (its ``global_ep``), Kaiming-normal scores.
It is an :class:`IteRand` with re-draws off, so ``rerand_lambda`` > 0 adds IteRand's re-draws.
"""

from __future__ import annotations

from typing import Any

from ptl_prune.iterand import IteRand


class PartialSearch(IteRand):
    method = "partial-search"

    def __init__(
        self,
        frozen_pruned: float = 0.25,
        frozen_kept: float = 0.25,
        sparsity_scope: str = "global",
        score_abs: bool = True,
        score_init: str = "kaiming_normal",
        rerand_lambda: float = 0.0,
        **iterand: Any,
    ) -> None:
        super().__init__(
            frozen_pruned=frozen_pruned,
            frozen_kept=frozen_kept,
            sparsity_scope=sparsity_scope,
            score_abs=score_abs,
            score_init=score_init,
            rerand_lambda=rerand_lambda,
            **iterand,
        )
