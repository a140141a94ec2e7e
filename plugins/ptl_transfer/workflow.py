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

    def resume_point(self, run: Any) -> str:
        """Where ``ptl resume`` continues: each newest checkpoint as a phase and its step (a run
        with lanes: each lane's), e.g. ``pssl step 48`` (``ptl runs show`` prints it)."""
        from ptl_cli.runs import Run
        from ptl_transfer.lanes import saved_plan

        plan = saved_plan(run.path)
        if plan is None:
            return _checkpoint_point(run)
        lanes = [Run(run.path / "lanes" / str(i)) for i in range(len(plan["lanes"]))]
        return "; ".join(f"lane {i}: {_checkpoint_point(lane)}" for i, lane in enumerate(lanes))

    def export(
        self, run: Any, fmt: str, out: str | None, verify: bool, stage: str | None = None
    ) -> list[str]:
        from ptl_transfer.export import export

        return export(run, fmt, out, verify, stage)


def _checkpoint_point(run: Any) -> str:
    """The newest checkpoint of ``run`` as ``phase step n`` (checkpoints count steps across phases)."""
    from ptl_cli.engine.checkpoint import CheckpointStore
    from ptl_cli.errors import PtlError
    from ptl_transfer import stages

    saved = CheckpointStore(run.checkpoint_dir).paths()
    if not saved:
        return "the beginning (no checkpoint yet)"
    step = int(saved[-1].stem.split("-")[1])
    try:
        from ptl_cli import plugins, recipes

        schema = plugins.get("workflows", "transfer").params
        recipe = recipes.validate(run.recipe_data(), schema, "recipe").model
    except PtlError:
        return saved[-1].name
    phases = stages.phases(recipe)
    # between phases: several start at one offset (a pool takes no steps); a finished pool has
    # logged its size, and the checkpoint after it is at that same step
    pooled = {r.get("stage") for r in run.metrics() if "pool_samples" in r}
    starting = [p.name for p in phases if p.offset == step and not (p.steps == 0 and p.name in pooled)]
    if starting:
        return f"the start of {starting[0]} ({saved[-1].name})"
    for phase in phases:
        if phase.offset < step < phase.offset + phase.steps:
            return f"{phase.name} step {step - phase.offset} ({saved[-1].name})"
    return f"the end: the results are written next ({saved[-1].name})"
