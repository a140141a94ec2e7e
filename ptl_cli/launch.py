"""Starting, resuming and summarizing runs: the part every run command has in common."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ptl_cli import plugins, recipes
from ptl_cli.errors import PtlError, UserError
from ptl_cli.options import Common
from ptl_cli.runs import Run


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def workflow_spec(kind: str):
    return plugins.get("workflows", kind)


def load_workflow(kind: str) -> Any:
    """The workflow object of run kind ``kind``, checked against the Workflow protocol (a missing
    member names the plugin). Its ``params`` is the recipe schema: the factory gets no arguments."""
    return workflow_spec(kind).build()


def resolve_recipe(kind: str, common: Common, default: str, overrides: dict[str, Any]):
    """The validated recipe for a run command: ``--recipe`` or ``default``, flags, ``--set``."""
    spec = workflow_spec(kind)
    overrides = dict(overrides)
    overrides["compute.device"] = common.device
    overrides["seed"] = common.seed
    overrides["compute.log"] = common.log
    resolved = recipes.resolve(common.recipe or default, spec.params, overrides, common.sets, kind)
    if resolved.model.kind != kind:
        raise UserError(
            f"{resolved.source}: this is a `{resolved.model.kind}` recipe; run it with "
            f"`ptl {resolved.model.kind} --recipe {common.recipe}`"
        )
    return spec, resolved


def launch(kind: str, common: Common, default_recipe: str, overrides: dict[str, Any]) -> None:
    """Resolve the recipe and run it in a new run directory (or print the plan).

    Under torchrun every rank resolves the same recipe; rank 0 creates the run directory and
    the others learn its path from rank 0 (see :func:`create_on_main`).
    """
    _, resolved = resolve_recipe(kind, common, default_recipe, overrides)
    workflow = load_workflow(kind)
    check_compute(resolved.model.compute)
    # the plan's checks run before a real run too: --dry-run reports what the run would
    # report before it trains, in the same words, and bad input leaves no run directory
    rows = list(workflow.plan(resolved.model))
    check_outputs(common)
    if common.dry_run:
        if distributed_info().is_main:
            print_plan(rows, resolved, common)
        return
    dist, _ = start_distributed(resolved.model.compute.device)
    out_existed = bool(common.out) and Path(common.out).is_dir()  # an empty folder the user made
    path = create_on_main(dist, lambda: Run.create(kind, resolved.model.name, resolved.data, common.out))
    try:
        execute(workflow, Run(path), resolved.model, common, resuming=False)
    except UserError:
        if dist.is_main:
            discard_unstarted(Run(path), keep_folder=out_existed)
        raise
    finally:
        if dist.is_main:
            Run(path).release()  # the command is over (in a notebook or a test, the process is not)


def check_outputs(common: Common) -> None:
    """Where the run will write: ``--out`` new or an empty folder; the cache and runs folders
    folders. Refused before anything is computed, and by ``--dry-run`` in the same words."""
    from ptl_cli import outputs

    outputs.check_cache_dir()
    if common.out:
        outputs.check_run_dir(Path(common.out), "--out")


def check_compute(compute: Any) -> None:
    """A device named in the recipe exists here, with its precision: the run's first errors.

    ``auto`` and ``cpu`` always exist, so planning them imports no torch (a paper recipe plans
    on a laptop in a fraction of a second); any other device (``cuda:1``, ``mps``, a typo) is
    resolved as the run resolves it, and bf16 support is checked on it. With ``auto``, whether
    the GPU found supports bf16 is learnt when the run starts.
    """
    check_loggers(compute.log)
    spec = (compute.device or "auto").strip().lower()
    if spec in ("auto", "cpu"):
        return
    from ptl_cli.engine.device import Precision, resolve_device

    Precision(compute.precision, resolve_device(spec))


def check_loggers(names: list[str]) -> None:
    """Each ``[compute] log`` name is a registered logger whose package is installed (the
    ``requires`` its plugin declares): a typo or a missing extra is a one-line error up front."""
    import importlib.util

    for name in names:
        spec = plugins.get("loggers", name)
        needed = spec.meta.get("requires")
        if needed and importlib.util.find_spec(needed) is None:
            extra = spec.meta.get("extra", needed)
            raise UserError(f"logger {name!r} needs the {needed} package: pip install 'ptl[{extra}]'")


def discard_unstarted(run: Run, keep_folder: bool) -> None:
    """Remove a run that bad input (a missing dataset, say) stopped before its first checkpoint.

    It holds nothing but the recipe and the failed status, and leaving it would make every typo
    a run in ``ptl runs list``; a run with a checkpoint is kept for ``ptl resume``.
    """
    import shutil

    if run.checkpoint_dir.is_dir() and any(run.checkpoint_dir.iterdir()):
        return
    run.release()
    shutil.rmtree(run.path, ignore_errors=True)
    if keep_folder:
        run.path.mkdir(parents=True, exist_ok=True)


def distributed_info():
    from ptl_cli.engine import distributed

    return distributed.from_env()


def start_distributed(device_spec: str):
    """``(dist, device)``: this process's rank and device; joins the process group under torchrun.

    The group's backend follows the recipe's device (NCCL for CUDA, gloo otherwise), so a CPU
    recipe runs with gloo even on a machine that has GPUs.
    """
    from ptl_cli.engine import distributed
    from ptl_cli.engine.device import resolve_device

    dist = distributed.from_env()
    device = distributed.local_device(dist, resolve_device(device_spec))
    distributed.init(dist, device)
    return dist, device


def create_on_main(dist, create) -> str:
    """Rank 0 calls ``create()`` (a :class:`Run`); every rank gets its path.

    A user error on rank 0 (``--out`` already holds a run) reaches every rank as the same
    error, instead of leaving the other ranks waiting for a path that never comes.
    """
    from ptl_cli.engine import distributed

    if not dist.enabled:
        return str(create().path)
    outcome: tuple[str, str] = ("", "")
    if dist.is_main:
        try:
            outcome = ("ok", str(create().path))
        except PtlError as exc:
            outcome = ("error", str(exc))
    outcome = distributed.broadcast_object(dist, outcome)
    if outcome[0] == "error":
        distributed.shutdown(dist)
        raise UserError(outcome[1])
    return outcome[1]


def resume(ref: str, common: Common) -> None:
    """Continue an interrupted (or failed) run from its newest good checkpoint."""
    run = Run.open(ref)
    main = distributed_info().is_main  # under torchrun, rank 0 writes the run and holds it
    if main:
        run.claim()  # before reading anything: a second `ptl resume` stops here, in one line
    try:
        _resume(run, common)
    finally:
        if main:
            run.release()


def _resume(run: Run, common: Common) -> None:
    info = run.info()
    if info["status"] == "completed":
        if not (run.path / "report.md").is_file():  # stopped while writing its report: finish that
            from ptl_cli.engine.report import results_of, write_report

            write_report(run, results_of(load_workflow(info["kind"]), run))
            console().print(f"{run.path} had completed; its report is written now")
            return
        raise UserError(f"run {run.path} already completed; nothing to resume")
    spec = workflow_spec(info["kind"])
    data = run.recipe_data()
    check_recipe_unchanged(run, info, data)
    if common.device:
        data.setdefault("compute", {})["device"] = common.device
    resolved = recipes.validate(data, spec.params, f"{run.path}/recipe.toml")
    execute(load_workflow(info["kind"]), run, resolved.model, common, resuming=True)


def check_recipe_unchanged(run: Run, info: dict[str, Any], data: dict[str, Any]) -> None:
    """Refuse to resume a run whose ``recipe.toml`` differs from the one it started with.

    The checkpoints were made by the recipe the run started with; continuing them under another
    (a wider model, another learning rate) fails deep inside, or worse, silently mixes two
    recipes in one result. Runs made before the hash was recorded are not checked.
    """
    from ptl_cli.runs import recipe_digest

    recorded = info.get("recipe_sha256")
    if not isinstance(recorded, str):
        return
    text = (run.path / "recipe.toml").read_bytes().decode("utf-8", errors="replace")
    if recipe_digest(text) == recorded:
        return
    started = info.get("recipe_started")
    changes = recipe_changes(started, data) if isinstance(started, dict) else []
    said = "; ".join(changes[:4]) + (f" (+{len(changes) - 4} more)" if len(changes) > 4 else "")
    raise UserError(
        f"{run.path}/recipe.toml changed since the run started ({said or 'its text differs'}); restore "
        "it to continue this run, or start a new run with the new recipe"
    )


def recipe_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``["model.width: 1.0 -> 2.0", ...]``: the keys whose values differ between two recipes."""

    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            elif value is not None:
                out[f"{prefix}{key}"] = value
        return out

    a, b = flat(before), flat(after)
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]  # fmt: skip


def execute(workflow: Any, run: Run, recipe: Any, common: Common, resuming: bool) -> None:
    """Run the workflow with the engine services, recording status and final metrics.

    Under torchrun every rank runs the workflow; only rank 0 writes status, metrics, the
    report and the summary, and the process group is left on every exit path.
    """
    from ptl_cli.engine import distributed
    from ptl_cli.engine.checkpoint import CheckpointStore
    from ptl_cli.engine.context import RunContext
    from ptl_cli.engine.device import Precision
    from ptl_cli.engine.interrupt import Interrupted, InterruptGuard
    from ptl_cli.engine.loggers import Loggers
    from ptl_cli.engine.progress import Progress
    from ptl_cli.engine.seeding import seed_everything

    out = console(stderr=common.json)
    dist, device = start_distributed(recipe.compute.device)
    if recipe.compute.malloc_tuning and device.type == "cpu":
        from ptl_cli.engine.malloc import keep_freed_memory

        keep_freed_memory()
    seed_everything(recipe.seed, recipe.compute.deterministic, recipe.compute.cudnn_benchmark)
    if dist.is_main:
        run.set_status("running", error="")
        from ptl_cli import provenance  # versions, device, CPU kernels, plugins: what made the run

        provenance.record(run, run.recipe_data(), recipe.kind, device, resuming)
    warn = lambda m: out.print(f"[yellow]warning:[/] {m}")  # noqa: E731
    loggers = Loggers.start(recipe.compute.log, run, resuming, warn) if dist.is_main else Loggers([], warn)
    try:
        with InterruptGuard() as guard:
            ctx = RunContext(
                run=run,
                recipe=recipe,
                device=device,
                precision=Precision(recipe.compute.precision, device),
                console=out,
                progress=Progress(
                    out, enabled=not common.quiet and dist.is_main, log_every_s=common.log_every_s
                ),
                checkpoints=CheckpointStore(
                    run.checkpoint_dir, warn=lambda m: out.print(f"[yellow]warning:[/] {m}")
                ),
                guard=guard,
                dist=dist,
                resuming=resuming,
                quiet=common.quiet,
                loggers=loggers,
            )
            verb = "resuming" if resuming else "run"
            ranks = f", {dist.world_size} processes" if dist.enabled else ""
            ctx.say(f"[bold]{verb}[/] {run.path} ({recipe.kind}, device {device}{ranks})")
            try:
                metrics = workflow.run(ctx)
            except Interrupted:
                if dist.is_main:
                    run.set_status("interrupted")
                    out.print(f"interrupted; continue with: ptl resume {run.path}")
                    print_json_summary(run, common)  # --json: an object for every outcome
                raise SystemExit(130) from None
            except KeyboardInterrupt:
                if dist.is_main:
                    run.set_status("interrupted")
                    print_json_summary(run, common)
                raise
            except PtlError as exc:
                if dist.is_main:
                    run.set_status("failed", error=str(exc))
                    print_json_summary(run, common)
                raise
            except Exception as exc:
                if dist.is_main:
                    run.set_status("failed", error=f"{type(exc).__name__}: {exc}")
                    print_json_summary(run, common)
                raise
        if dist.is_main:
            run.set_status("completed", metrics=metrics)
            from ptl_cli.engine.report import results_of, write_report

            write_report(run, results_of(workflow, run))
            loggers.images(run)
            summarize(run, workflow, common)
        distributed.barrier(dist)  # nobody leaves before rank 0 recorded the result
    finally:
        loggers.close()
        distributed.shutdown(dist)


def print_plan(rows: list[tuple[str, str]], resolved: recipes.ResolvedRecipe, common: Common) -> None:
    """The plan's rows (``workflow.plan``) as a table, or as JSON with ``--json``."""
    if common.json:
        print(json.dumps({"plan": dict(rows), "recipe": resolved.data}, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(title=f"plan: {resolved.model.name} ({resolved.model.kind})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for what, value in rows:
        table.add_row(what, str(value))
    out = console()
    out.print(table)
    out.print(f"[dim]from {resolved.source}; nothing was run (--dry-run)[/]")


def summarize(run: Run, workflow: Any, common: Common) -> None:
    """Print the results table (or the JSON summary with ``--json``)."""
    if common.json:
        sys.stdout.write(json.dumps(run_summary(run), indent=2, default=str) + "\n")
        return
    from ptl_cli.engine.report import print_results, results_of

    print_results(console(), results_of(workflow, run))


def print_json_summary(run: Run, common: Common) -> None:
    """With ``--json``: the run's summary on stdout (status ``interrupted``, ``failed``, ...), so a
    script always reads one JSON object, whatever became of the run."""
    if common.json:
        sys.stdout.write(json.dumps(run_summary(run), indent=2, default=str) + "\n")
        sys.stdout.flush()


def run_summary(run: Run) -> dict[str, Any]:
    info = run.info()
    return {
        "id": info.get("id"),
        "path": str(run.path),
        "kind": info["kind"],
        "name": info.get("name"),
        "status": "interrupted" if run.abandoned() else info["status"],  # killed: nothing runs it
        "error": info.get("error", ""),
        "created": info.get("created"),
        "updated": info.get("updated"),
        "ptl_version": info.get("ptl_version"),
        "recipe": run.recipe_data(),
        "metrics": info.get("metrics", {}),
        "at": run.position(),  # its newest record: where a running or stopped run has got to
        "provenance": info.get("provenance", {}),
        "resumed_under": info.get("resumed_under", []),
    }
