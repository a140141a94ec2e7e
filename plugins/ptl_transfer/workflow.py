"""The ``transfer`` workflow object: what ``ptl transfer``, ``resume``, ``runs show`` and ``export`` call.

Kept free of torch so that ``--dry-run`` and ``ptl runs show`` stay cheap; the stage loops are
in :mod:`ptl_transfer.loops` and are imported when a run starts.
"""

from __future__ import annotations

from typing import Any

from ptl_transfer import stages


class TransferWorkflow:
    def plan(self, recipe: Any) -> list[tuple[str, str]]:
        from ptl_transfer.planning import plan

        return plan(recipe)

    def run(self, ctx: Any) -> dict[str, Any]:
        from ptl_transfer import loops

        return loops.run(ctx)

    def results_table(self, run: Any) -> tuple[list[str], list[list[Any]]]:
        """One row per phase that ran, in execution order: a stage's test accuracy and gain over
        scratch, and every phase's seconds (the pools and PP pre-training the stages share too),
        then their total: where the run's time went."""
        metrics = run.info().get("metrics", {})
        header = ["stage", "method", "test_acc", "vs scratch", "seconds"]
        rows = []
        base = metrics.get("scratch_test_acc")
        total = 0.0
        for name in stages.PHASES:
            seconds = metrics.get(stages.metric_key(name, "seconds"))
            if name in stages.STAGES:
                acc = metrics.get(stages.metric_key(name))
                if acc is None:  # a stage the recipe did not ask for
                    continue
                delta = f"{acc - base:+.4f}" if base is not None and name != "scratch" else ""
                rows.append([name, stages.DESCRIPTIONS[name], acc, delta, seconds])
            elif seconds is not None:  # a phase the stages share: no accuracy of its own
                rows.append([name, stages.DESCRIPTIONS[name], "", "", seconds])
            else:
                continue
            total += seconds or 0.0
        if rows:
            rows.append(["total", _total_label(run), "", "", round(total, 3)])
        return header, rows

    def export(self, run: Any, fmt: str, out: str | None, verify: bool) -> list[str]:
        from ptl_transfer.export import export

        return export(run, fmt, out, verify)


def _total_label(run: Any) -> str:
    """Say when the phases' seconds overlapped: stages side by side take less wall time than their sum."""
    from ptl_transfer.lanes import saved_plan

    plan = saved_plan(run.path)
    if plan is None:
        return "all phases"
    return f"all phases, summed ({len(plan['lanes'])} processes side by side: less wall time)"
