"""The algorithm's parameter schema (validated by ptl before the factory runs)."""

from __future__ import annotations

from pydantic import Field

from ptl_cli.schema import Params


class ProjConsistencyParams(Params):
    proj_dim: int = Field(16, ge=1, description="width of the projection head's output")
    lambda_u: float = Field(1.0, ge=0.0, description="weight of the projection consistency loss")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="decay of the running similarity (a log)")
