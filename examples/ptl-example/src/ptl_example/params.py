"""Parameter schemas: validated when a recipe is resolved, listed by ``ptl list``.

``Params`` forbids unknown keys, so ``--set pruner.params.ramp_step=10`` is an error that suggests
``ramp_steps`` instead of being silently ignored.
"""

from __future__ import annotations

from ptl_cli.schema import Params
from pydantic import Field


class GMPParams(Params):
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="final fraction of each layer's weights pruned")
    ramp_steps: int = Field(
        1000, ge=1, description="optimizer steps over which sparsity rises to its final value"
    )
    update_every: int = Field(100, ge=1, description="steps between mask updates")


class SATFixMatchParams(Params):
    ema: float = Field(0.999, ge=0.0, lt=1.0, description="EMA decay of the self-adaptive threshold")
    lambda_u: float = Field(1.0, ge=0.0, description="weight of the unlabeled loss")
