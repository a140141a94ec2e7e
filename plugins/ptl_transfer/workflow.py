"""The ``transfer`` workflow object: what ``ptl transfer``, ``resume``, ``runs show`` and ``export`` call.

Kept free of torch so that ``--dry-run`` and ``ptl runs show`` stay cheap; the stage loops are
in :mod:`ptl_transfer.loops` and are imported when a run starts.
"""

from __future__ import annotations

from typing import Any


class TransferWorkflow:
    def plan(self, recipe: Any) -> list[tuple[str, str]]:
        from ptl_transfer.planning import plan

        return plan(recipe)

    def run(self, ctx: Any) -> dict[str, Any]:
        from ptl_transfer import loops

        return loops.run(ctx)

    def results_table(self, run: Any) -> tuple[list[str], list[list[Any]]]:
        from ptl_transfer import results

        return results.table(run)

    def results(self, run: Any) -> Any:
        """What the end of a run and ``ptl runs show`` print (:func:`ptl_transfer.results.results`)."""
        from ptl_transfer import results

        return results.results(run)

    def export(
        self, run: Any, fmt: str, out: str | None, verify: bool, stage: str | None = None
    ) -> list[str]:
        from ptl_transfer.export import export

        return export(run, fmt, out, verify, stage)
