"""Registers ``transfer``: the workflow, command and benchmark (entry point ``ptl_transfer.hooks``).

Nothing heavy is imported here: the schema module needs pydantic only (imported when the
workflow registry is built), the command module typer only, and the workflow itself -- torch,
the loops -- is imported from its ``"module:attr"`` string when a run starts.
"""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl


@hookimpl
def ptl_register_workflows(register: Any) -> None:
    from ptl_transfer.recipe import TransferRecipe

    register(
        "transfer",
        "ptl_transfer.workflow:TransferWorkflow",
        description="transfer without source data: pseudo pre-training, PCS and P-SSL, with baselines",
        params=TransferRecipe,
    )


@hookimpl
def ptl_register_commands(app: Any) -> None:
    from ptl_transfer.command import transfer

    app.command("transfer")(transfer)


@hookimpl
def ptl_register_benchmarks(register: Any) -> None:
    from ptl_transfer.bench import bench_transfer

    register(
        "transfer",
        bench_transfer,
        description="FixMatch and supervised steps, loader and strong views",
        default=True,
    )
