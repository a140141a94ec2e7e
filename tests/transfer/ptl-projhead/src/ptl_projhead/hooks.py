"""Registration only: nothing heavy is imported until the algorithm is built."""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl
from ptl_projhead import params


@hookimpl
def ptl_register_ssl_algorithms(register: Any) -> None:
    register(
        "proj-consistency",
        "ptl_projhead.algorithm:ProjConsistency",
        description="Cross-entropy plus a projection head's weak/strong cosine consistency (a test plugin)",
        params=params.ProjConsistencyParams,
    )
