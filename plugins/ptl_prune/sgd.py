"""The weight-optimized baseline: ordinary dense SGD on the same architecture and weight distribution.

It is a pruner that prunes nothing, so the same workflow, recipes and reports compare it with
edge-popup and IteRand at equal parameter counts. Weights are drawn from ``weight_init`` with the
same seeded generators as the supermask methods; biases start at zero; everything is trained.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ptl_prune import inits, supermask


class DenseSGD:
    method = "sgd"

    def __init__(self, weight_init: str = "kaiming_uniform", bn_affine: bool = True) -> None:
        self.weight_init = weight_init
        self.bn_affine = bn_affine
        self.seed = 0

    def prepare(self, model: nn.Module, seed: int) -> nn.Module:
        self.seed = int(seed)
        for index, (_, module) in enumerate(supermask.prunable_layers(model)):
            with torch.no_grad():
                module.weight.copy_(
                    inits.initial_weight(self.weight_init, module.weight.shape, self.seed, index)
                )
                if module.bias is not None:
                    module.bias.zero_()
        if not self.bn_affine:
            supermask.make_batchnorm_nonaffine(model)
        return model

    def trainable_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    def after_step(self, model: nn.Module, step: int) -> None:
        """Nothing to do after a dense step."""

    def sparsity(self, model: nn.Module) -> float:
        return 0.0

    def counts(self, model: nn.Module) -> tuple[int, int]:
        total = sum(m.weight.numel() for _, m in supermask.prunable_layers(model))
        return total, total

    def export_dense(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return supermask.dense_state_dict(model)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state.get("seed", self.seed))
