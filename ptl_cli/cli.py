"""The ``ptl`` command line: core commands plus whatever commands plugins add.

Importing this module must stay cheap (no torch): ``ptl --help`` and ``ptl plugins`` load
only plugin hook modules, never components.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any, Optional

import typer

from ptl_cli import __version__, options, plugins
from ptl_cli.errors import PtlError, UserError
from ptl_cli.registry import KINDS

app = typer.Typer(
    name="ptl",
    help="Transfer without source data, and pruning of randomly initialized networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
recipes_app = typer.Typer(help="List and show recipes.", no_args_is_help=False)
runs_app = typer.Typer(help="List and inspect runs.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")
app.add_typer(runs_app, name="runs")

_state = {"debug": False}


def _console():
    from rich.console import Console

    return Console(highlight=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ptl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    if debug:
        _state["debug"] = True  # also set by main(), which takes --debug anywhere on the line


# -- plugins & components ---------------------------------------------------------------------
plugins_app = typer.Typer(help="Installed plugins; `ptl plugins new` starts a new one.")
app.add_typer(plugins_app, name="plugins")


@plugins_app.callback(invoke_without_command=True)
def plugins_command(
    ctx: typer.Context,
    as_json: options.Json = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and modules.")] = False,
) -> None:
    """Installed plugins: name, version, hooks, status and error."""
    if ctx.invoked_subcommand is not None:
        return
    manager = plugins.manager()
    for kind in KINDS:  # run every register hook: a malformed registration marks its plugin `error`
        manager.registry(kind)
    rows = list(manager.plugins.values())
    if as_json:
        typer.echo(json.dumps([p.as_dict() for p in rows], indent=2))
        return
    from rich.table import Table

    table = Table(title="ptl plugins")
    for col in ("name", "version", "status", "hooks"):
        table.add_column(col)
    if verbose:
        table.add_column("module", overflow="fold")
    for p in rows:
        status = {"ok": "[green]ok[/]", "error": "[red]error[/]"}.get(p.status, f"[yellow]{p.status}[/]")
        hooks = ", ".join(h.removeprefix("ptl_register_") for h in p.hooks)
        version = p.version + (" (built-in)" if p.builtin else "")
        cells = [p.name, version, status, hooks]
        if verbose:
            cells.append(p.module)
        table.add_row(*cells)
    console = _console()
    console.print(table)
    for message in manager.notes:
        console.print(f"[yellow]note:[/] {message}")
    for p in rows:
        if p.status == "error":
            console.print(f"[red]{p.name}[/]: {p.error}")
            if verbose and p.detail:
                console.print(p.detail, markup=False)


@plugins_app.command("new")
def plugins_new(
    name: Annotated[str, typer.Argument(help="Plugin name, e.g. 'magnitude' (package ptl-magnitude).")],
    kind: Annotated[str, typer.Option("--kind", help="pruner | ssl | generator | model | dataset | logger")],
    directory: Annotated[str, typer.Option("--dir", help="Where to create the package folder.")] = ".",
) -> None:
    """Create an installable plugin package: entry point, a working component, and its tests."""
    from ptl_cli.scaffold import KINDS as SCAFFOLD_KINDS
    from ptl_cli.scaffold import PluginNames, name_taken_note, scaffold

    path = scaffold(name, kind, directory)
    names = PluginNames.from_name(name)
    console = _console()
    console.print(f"created {path} ({SCAFFOLD_KINDS[kind].label} [bold]{names.component}[/])")
    note = name_taken_note(names, kind)
    if note:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"next: cd {path} && pip install -e '.[test]' && pytest")


_KIND_ALIASES = {"ssl-algorithms": "ssl", "source-classifiers": "classifiers"}


@app.command("list")
def list_command(
    kind: Annotated[Optional[str], typer.Argument(help=f"One of: {', '.join(KINDS)}.")] = None,  # noqa: UP045
    pattern: Annotated[Optional[str], typer.Argument(help="A name, or a wildcard such as 'conv*'.")] = None,  # noqa: UP045
    as_json: options.Json = False,
) -> None:
    """Components (generators, ssl, pruners, models, datasets, ...) with their parameters."""
    from ptl_cli.schema import schema_fields

    manager = plugins.manager()
    if kind is not None:
        kind = _KIND_ALIASES.get(kind, kind)
        if kind not in KINDS:
            from ptl_cli.errors import did_you_mean

            raise UserError(f"unknown component kind {kind!r}; {did_you_mean(kind, KINDS)}")
    kinds = [kind] if kind else list(KINDS)
    out: dict[str, list[dict]] = {}
    conflicts = []
    for k in kinds:
        registry = manager.registry(k)
        if pattern and not any(c in pattern for c in "*?["):
            # a plain name: exact, alias or plugin/name; unknown ones get "did you mean"
            specs = [registry.get(pattern)]
        else:
            specs = registry.filter(pattern) if pattern else list(registry)
        out[k] = [
            {
                "name": s.name,
                "plugin": s.plugin,
                "description": s.description,
                "aliases": list(s.aliases),
                "params": schema_fields(s.params) if k != "workflows" else [],
            }
            for s in specs
        ]
        conflicts += [c.message() for c in registry.conflicts]
    if as_json:
        typer.echo(json.dumps(out if kind is None else out[kind], indent=2, default=str))
        return
    from rich.table import Table

    console = _console()
    single = [(k, items[0]) for k, items in out.items() if len(items) == 1 and pattern and items[0]["params"]]
    for k, items in out.items():
        table = Table(title=k, title_justify="left")
        for col in ("name", "plugin", "description", "parameters"):
            table.add_column(col, overflow="fold")
        for item in items:
            params = ", ".join(
                f"{p['name']}={p['default']!r}" if not p["required"] else f"{p['name']} (required)"
                for p in item["params"]
            )
            table.add_row(item["name"], item["plugin"], item["description"].split("\n")[0], params)
        console.print(table)
    for _kind, item in single:  # one component asked for: each parameter with what it means
        table = Table(title=f"{item['name']}: parameters", title_justify="left")
        for col in ("parameter", "default", "description"):
            table.add_column(col, overflow="fold")
        for p in item["params"]:
            default = "(required)" if p["required"] else repr(p["default"])
            table.add_row(p["name"], default, p.get("description") or "")
        console.print(table)
    if kind is not None and not single and any(items for items in out.values()):
        console.print(f"`ptl list {kind} NAME` describes each parameter of one.", highlight=False)
    for message in conflicts:
        console.print(f"[yellow]note:[/] {message}")
    for p in manager.plugins.values():
        if p.status == "error":
            console.print(f"[red]plugin {p.name!r} not loaded:[/] {p.error}")


# -- recipes ------------------------------------------------------------------------------------
@recipes_app.callback(invoke_without_command=True)
def _recipes_default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        recipes_list()


@recipes_app.command("list")
def recipes_list(as_json: options.Json = False) -> None:
    """Recipes ptl knows (bundled, and those on $PTL_RECIPE_PATH)."""
    from ptl_cli import recipes

    rows = []
    for name, path in sorted(recipes.available().items()):
        try:
            data, _ = recipes.load_raw(str(path))
        except UserError as exc:
            data = {"kind": "?", "description": f"(broken: {exc})"}
        rows.append(
            {
                "name": name,
                "kind": data.get("kind", "?"),
                "description": data.get("description", ""),
                "path": str(path),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="recipes")
    for col in ("name", "kind", "description"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["kind"], row["description"])
    _console().print(table)


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="Recipe name or file.")]) -> None:
    """Print a recipe with its `extends` chain merged and defaults filled in."""
    from ptl_cli import recipes

    data, path = recipes.load_raw(name)
    kind = data.get("kind")
    if isinstance(kind, str):
        spec = plugins.get("workflows", kind)
        data = recipes.validate(data, spec.params, f"recipe {path}").data
    typer.echo(f"# {path}")
    typer.echo(recipes.dumps(data))


# -- runs ---------------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    root: Annotated[
        str | None, typer.Option(help="Runs directory (default $PTL_RUNS_DIR or ./runs).")
    ] = None,  # noqa: UP045
    as_json: options.Json = False,
) -> None:
    """Runs under the runs directory, oldest first."""
    from pathlib import Path

    from ptl_cli.launch import run_summary
    from ptl_cli.runs import Run, runs_root

    directory = Path(root) if root else runs_root()
    summaries = [_summary_or_unreadable(run_summary, r) for r in Run.list(directory)]
    if as_json:
        typer.echo(json.dumps(summaries, indent=2, default=str))
        return
    if not summaries:
        _console().print(f"no runs under {directory}")
        return
    from rich.table import Table

    table = Table(title=f"runs under {directory}")
    for col in ("run", "kind", "status", "test_acc"):
        table.add_column(col)
    for s in summaries:
        acc = s["metrics"].get("test_acc")
        table.add_row(s["path"], s["kind"], s["status"], f"{acc:.4f}" if isinstance(acc, float) else "")
    _console().print(table)


def _summary_or_unreadable(run_summary, run) -> dict:
    """One run's summary; a run whose files cannot be read is listed as such, not fatal."""
    try:
        return run_summary(run)
    except UserError as exc:
        return {"path": str(run.path), "kind": "?", "status": "broken", "error": str(exc), "metrics": {}}


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run directory or id.")], as_json: options.Json = False
) -> None:
    """A run's status, recipe and results."""
    from ptl_cli.launch import load_workflow, run_summary, summarize
    from ptl_cli.runs import Run

    r = Run.open(run)
    summary = run_summary(r)
    if summary["status"] != "completed":
        summary["resumes_from"] = _resume_point(r)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
        return
    console = _console()
    console.print(f"[bold]{summary['path']}[/]  kind {summary['kind']}  status {summary['status']}")
    if summary["error"]:
        console.print(f"[red]error:[/] {summary['error']}")
    if summary["status"] == "completed":
        try:
            summarize(r, load_workflow(summary["kind"]), options.Common())
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            # a run.json edited or cut short: its results are named, not a traceback
            raise UserError(
                f"{r.path}/run.json: its results cannot be read ({type(exc).__name__}: {exc})"
            ) from None
    else:
        console.print(f"at: {summary['at']}  (its newest record)")
        console.print(f"resume continues from: {_resume_point(r)}", highlight=False)
        for key, value in summary["metrics"].items():
            console.print(f"{key}: {value}")
    from ptl_cli import provenance

    console.print("[bold]made by[/]")
    for line in provenance.lines(summary["provenance"]):
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    for changed in summary["resumed_under"]:
        shown = "; ".join(f"{k} {v}" for k, v in provenance.flat(changed).items())
        console.print(f"  resumed under: {shown}", markup=False, highlight=False, soft_wrap=True)


def _resume_point(run: Any) -> str:
    """Where ``ptl resume`` would continue: the workflow's words for its newest checkpoint, else
    the checkpoint's step (a record logged after it is written again by the resume)."""
    from ptl_cli.engine.checkpoint import CheckpointStore
    from ptl_cli.launch import load_workflow

    try:
        workflow = load_workflow(run.kind)
    except UserError:
        workflow = None
    if workflow is not None and hasattr(workflow, "resume_point"):
        return workflow.resume_point(run)
    saved = CheckpointStore(run.checkpoint_dir).paths()
    if not saved:
        return "the beginning (no checkpoint yet)"
    return f"step {int(saved[-1].stem.split('-')[1])} ({saved[-1].name})"


@app.command("resume")
def resume_command(
    run: Annotated[str, typer.Argument(help="Run directory or id.")],
    device: options.Device = None,
    as_json: options.Json = False,
    quiet: options.Quiet = False,
    log_every_s: options.LogEvery = 30.0,
) -> None:
    """Continue an interrupted run from its newest good checkpoint (or a sweep's unfinished cells)."""
    from pathlib import Path

    from ptl_cli.launch import resume

    if (Path(run) / "sweep.json").is_file():
        from ptl_cli import sweep

        code = sweep.resume(run, quiet=quiet)
        if code:
            raise SystemExit(code)
        return
    from ptl_cli.provenance import naming_missing_plugins
    from ptl_cli.runs import Run

    with naming_missing_plugins(Run.open(run)):
        resume(run, options.Common(device=device, json=as_json, quiet=quiet, log_every_s=log_every_s))


@app.command("export")
def export_command(
    run: Annotated[str, typer.Argument(help="Run directory or id.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="pt | safetensors | ticket (workflow-specific).")
    ] = "pt",
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Output file.")] = None,  # noqa: UP045
    verify: Annotated[bool, typer.Option("--verify", help="Rebuild from the export and compare.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing -o file (never a run's own files).")
    ] = False,
    stage: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--stage",
            metavar="<name>",
            help="Which stage's model (transfer: scratch, kd, pp, ...; default: the final).",
        ),
    ] = None,
) -> None:
    """Write a finished run's model in a standalone format."""
    from pathlib import Path

    from ptl_cli import outputs
    from ptl_cli.launch import load_workflow
    from ptl_cli.runs import Run

    r = Run.open(run)
    kind = r.kind
    if out:  # checked before the run is read: nothing is computed for a path that cannot be written
        if fmt == "dir":
            outputs.check_run_dir(Path(out), "-o")
        else:
            outputs.check_new_file(Path(out), "-o", force=force)
    r.claim(read_only_ok=bool(out))  # no export while another process writes the run (a resume)
    from ptl_cli.provenance import naming_missing_plugins

    try:
        with naming_missing_plugins(r):  # a plugin the run used and is gone: name its distribution
            workflow = load_workflow(kind)
            if not hasattr(workflow, "export"):
                raise UserError(f"runs of kind {kind!r} have nothing to export")
            import inspect

            if stage is not None and "stage" not in inspect.signature(workflow.export).parameters:
                raise UserError(f"runs of kind {kind!r} have no stages to choose from; leave out --stage")
            lines = workflow.export(r, fmt, out, verify, **({"stage": stage} if stage is not None else {}))
    finally:
        r.release()  # the export is written (or refused): the run is free again
    for line in lines:
        typer.echo(line)


# -- sweeps, any recipe, comparisons ----------------------------------------------------------------
def _sweeps() -> None:
    from ptl_cli import sweep_commands

    app.add_typer(sweep_commands.sweep_app, name="sweep")
    app.command("run")(sweep_commands.run_command)
    runs_app.command("compare")(sweep_commands.runs_compare)


_sweeps()


# -- bench --------------------------------------------------------------------------------------
def _bench() -> None:
    from ptl_cli import bench

    app.command("bench")(bench.command)


_bench()


# -- entry point --------------------------------------------------------------------------------
#: How many commands and sub-apps the core itself registers; plugins' come after these.
_CORE_COMMANDS = plugins.command_marks(app)


def build_app() -> typer.Typer:
    """The app with every plugin's commands added (each plugin guarded).

    Idempotent: the plugin commands of an earlier call (or of an earlier plugin manager, after
    :func:`ptl_cli.plugins.reset`) are dropped first, so calling ``main`` again in one process
    (tests, notebooks) neither duplicates commands nor keeps those of plugins now gone.
    """
    plugins.drop_commands_after(app, _CORE_COMMANDS)
    plugins.manager().add_commands(app)
    return app


def _click_exceptions():
    """Typer >= 0.20 vendors click as ``typer._click``; older releases use click itself."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions
    return exceptions


def _flags_without_type(command: Any) -> None:
    """Show boolean flags in help as ``--quiet``, not ``--quiet <bool>``.

    Typer 0.29 prints the type of every option, flags included, which reads as if ``--quiet``
    took a value. An empty metavar on flags (the help option too) restores the usual look, in
    every command plugins add as well; older Typer releases already showed flags this way.
    """
    ctx = command.context_class(command, info_name=command.name, **(command.context_settings or {}))
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_without_type(sub)


def _fill_choices(command: Any) -> None:
    """Put the registered names into flag help that asks for them (``{choices:ssl}``): built from
    the registries when help is shown, so help and ``ptl list`` agree, plugins included."""
    for param in command.params:
        if isinstance(getattr(param, "help", None), str) and "{choices:" in param.help:
            param.help = options.fill_choices(param.help)
    for sub in getattr(command, "commands", {}).values():
        _fill_choices(sub)


def main(argv: list[str] | None = None) -> None:
    ex = _click_exceptions()
    args, debug = _take_debug(sys.argv[1:] if argv is None else argv)
    _state["debug"] = debug or bool(os.environ.get("PTL_DEBUG"))
    try:
        command = typer.main.get_command(build_app())
        _flags_without_type(command)
        if "--help" in args or "-h" in args:
            _fill_choices(command)
        # Without standalone mode click returns a command's `typer.Exit(code)` instead of raising it.
        code = command.main(args=args, prog_name="ptl", standalone_mode=False)
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except (typer.Exit, getattr(ex, "Exit", typer.Exit)) as exc:
        raise SystemExit(getattr(exc, "exit_code", 0)) from None
    except (typer.Abort, getattr(ex, "Abort", typer.Abort)):
        _fail("aborted", 130)
    except ex.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise SystemExit(0) from None  # typer already printed the help
        if _state["debug"]:
            raise
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        _fail(exc.format_message().replace("\n", " ") + hint, 2)
    except ex.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except PtlError as exc:
        if _state["debug"]:
            raise
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        # `ptl list | head`: the reader left; say nothing more (and keep Python from complaining)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(141) from None
    except Exception as exc:
        if _state["debug"]:
            raise
        # A bug, not bad input: still one line, with the way to the traceback.
        text = str(exc).replace("\n", " ").strip()
        detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        _fail(f"unexpected {detail} (run again with --debug for the traceback)", 1)


def _take_debug(args: list[str]) -> tuple[list[str], bool]:
    """Take ``--debug`` from anywhere on the command line, so that "run again with --debug" works
    by appending it (click would accept it only before the command). A ``--debug`` that is the
    value of an option (``--set --debug``) or comes after ``--`` is left where it is."""
    kept: list[str] = []
    found = False
    for i, arg in enumerate(args):
        if arg == "--":
            return kept + list(args[i:]), found
        if arg == "--debug" and not (kept and kept[-1] in ("--set", "-s")):
            found = True
            continue
        kept.append(arg)
    return kept, found


def _fail(message: str, code: int) -> None:
    sys.stderr.write(f"ptl: error: {message}\n")
    raise SystemExit(code)
