"""The commands ``ptl sweep``, ``ptl sweep show``, ``ptl run`` and ``ptl runs compare``.

Kept apart from :mod:`ptl_cli.cli` so that the main module stays short; importing this costs no
torch, matplotlib or submitit (they are imported inside the commands).
"""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from ptl_cli import options

sweep_app = typer.Typer(
    help="Run a grid of recipe values x seeds as ordinary runs; `ptl sweep show` aggregates them.",
    no_args_is_help=False,
)

Grid = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option("--grid", "-g", metavar="<key.path=v1,v2>", help="A grid axis (repeatable)."),
]


@sweep_app.callback(invoke_without_command=True)
def sweep_command(
    ctx: typer.Context,
    recipe: options.Recipe = None,
    grid: Grid = None,
    seeds: Annotated[str | None, typer.Option(metavar="<0,1,2>", help="Seeds of every grid point.")] = None,  # noqa: UP045
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Cells run at once (local).")] = None,  # noqa: UP045
    launcher: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(metavar="<local|slurm|submitit-local>", help="Where cells run (default local)."),
    ] = None,
    sets: options.Sets = None,
    out: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--out", "-o", metavar="<dir>", help="Sweep directory (new, empty, or this same sweep)."
        ),
    ] = None,
    log: options.Log = None,
    partition: Annotated[Optional[str], typer.Option(help="Slurm partition.")] = None,  # noqa: UP045
    time_min: Annotated[Optional[int], typer.Option("--time", help="Slurm minutes per job.")] = None,  # noqa: UP045
    gpus_per_node: Annotated[Optional[int], typer.Option(help="Slurm GPUs per job.")] = None,  # noqa: UP045
    cpus_per_task: Annotated[Optional[int], typer.Option(help="Slurm CPUs per job.")] = None,  # noqa: UP045
    mem_gb: Annotated[Optional[float], typer.Option(help="Slurm memory per job (GB).")] = None,  # noqa: UP045
    dry_run: options.DryRun = False,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
) -> None:
    """Expand `--grid` axes x `--seeds` (or the recipe's [sweep] table) into run directories and run them.

    Running the same command again, or `ptl resume SWEEP`, skips completed cells and resumes
    interrupted ones; a failed cell is reported and the others go on.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ptl_cli import sweep

    slurm = {
        "partition": partition,
        "time": time_min,
        "gpus_per_node": gpus_per_node,
        "cpus_per_task": cpus_per_task,
        "mem_gb": mem_gb,
    }
    request = sweep.Request(
        recipe=recipe,
        grid=list(grid or []),
        seeds=seeds,
        sets=list(sets or []),
        jobs=jobs,
        launcher=launcher,
        out=out,
        slurm={k: v for k, v in slurm.items() if v is not None},
        log=options.log_names(log) or [],
    )
    plan, table, base = sweep.plan(request)
    if dry_run:
        _print_cells(plan, table, as_json)
        return
    sweep.prepare(plan, base)
    code = sweep.execute(plan, table, quiet)
    if as_json:
        from ptl_cli.sweep_results import aggregate

        typer.echo(json.dumps(aggregate(plan), indent=2, default=str))
    if code:
        raise SystemExit(code)


def _print_cells(plan, table, as_json: bool) -> None:
    if as_json:
        payload = {
            "path": str(plan.path),
            "spec": plan.spec,
            "options": table.model_dump(),
            "cells": [c.as_dict() for c in plan.cells],
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    keys = list(plan.spec["grid"])
    out = Table(title=f"sweep {plan.path}: {len(plan.cells)} cells ({plan.kind}), {table.launcher} launcher")
    for column in ("cell", *keys, "seed"):
        out.add_column(column)
    for cell in plan.cells:
        out.add_row(cell.id, *(str(cell.point[k]) for k in keys), str(cell.seed))
    console = Console(highlight=False)
    console.print(out)
    console.print("[dim]each cell's recipe validated and planned; nothing was run (--dry-run)[/]")


@sweep_app.command("show")
def sweep_show(
    sweep_dir: Annotated[str, typer.Argument(metavar="SWEEP", help="Sweep directory.")],
    metric: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Final metric of the plot (default test_acc, or the last stage's)."),
    ] = None,
    x: Annotated[Optional[str], typer.Option(help="Grid key on the plot's x axis.")] = None,  # noqa: UP045
    hue: Annotated[Optional[str], typer.Option(help="Grid key drawn as one line per value.")] = None,  # noqa: UP045
    as_json: options.Json = False,
) -> None:
    """Mean ± std over seeds per grid point; writes SWEEP/results.csv and a plot (PNG)."""
    from ptl_cli import sweep
    from ptl_cli.sweep_results import aggregate, print_table, write_csv, write_plot

    record = sweep.Sweep.open(sweep_dir)
    record.refresh()
    result = aggregate(record)
    csv_path = write_csv(record, result)
    png = write_plot(record, result, metric=metric, x=x, hue=hue)
    if as_json:
        typer.echo(json.dumps({**result, "csv": str(csv_path), "plot": str(png) if png else None}, indent=2))
        return
    print_table(record, result)
    from rich.console import Console

    Console(highlight=False).print(f"wrote {csv_path}" + (f" and {png}" if png else ""))


def run_command(
    recipe: Annotated[
        str, typer.Option("--recipe", "-r", metavar="<name|file>", help="Recipe name or TOML file.")
    ],
    sets: options.Sets = None,
    device: options.Device = None,
    seed: options.Seed = None,
    out: options.Out = None,
    log: options.Log = None,
    dry_run: options.DryRun = False,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    log_every_s: options.LogEvery = 30.0,
) -> None:
    """Run a recipe of any kind: its `kind` (prune, transfer, train-source, ...) picks the workflow."""
    from ptl_cli import recipes
    from ptl_cli.errors import UserError
    from ptl_cli.launch import launch

    data, path = recipes.load_raw(recipe)
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise UserError(f"recipe {path}: no `kind` (prune, transfer, train-source, ...)")
    common = options.Common(
        recipe=recipe,
        sets=sets,
        device=device,
        seed=seed,
        out=out,
        dry_run=dry_run,
        json=as_json,
        quiet=quiet,
        log_every_s=log_every_s,
        log=options.log_names(log),
    )
    launch(kind, common, recipe, {})


def runs_compare(
    runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="Run directories or ids.")],
    plot: Annotated[
        str, typer.Option(metavar="<file.png>", help="Where the overlaid curves go (a new file).")
    ] = "compare.png",
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing --plot file (never a run's own files).")
    ] = False,
    as_json: options.Json = False,
) -> None:
    """Runs side by side: final metrics, the recipe keys that differ, and overlaid curves."""
    from ptl_cli.sweep_results import compare_runs, print_comparison

    result = compare_runs(runs, plot, force=force)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    print_comparison(result)
