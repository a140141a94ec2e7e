"""``ptl sweep``: a grid of recipe values times seeds, each cell an ordinary run directory.

A paper figure is a grid (widths x methods x seeds), not a run. The sweep expands the grid into
cells, writes each cell's recipe, and starts every cell the way a user would: a separate
``python -m ptl_cli run --recipe CELL.toml --out RUN`` process (``ptl resume RUN`` for a cell that
was interrupted), so a crash of one cell never takes the sweep down and every cell is a run that
``ptl runs show``, ``ptl resume`` and ``ptl export`` understand. The sweep directory only adds a
record of the grid and of each cell's status::

    SWEEP/sweep.json        the spec (recipe, grid, seeds, --set items) and each cell's status
    SWEEP/cells/ID.toml     each cell's recipe (the base recipe with its grid values and seed)
    SWEEP/runs/ID/          each cell's run directory
    SWEEP/logs/ID.log       each cell's console output

Running the same command again (or ``ptl resume SWEEP``) skips completed cells and resumes the
others from their checkpoints, so an interrupted sweep ends exactly where an uninterrupted one
would. Statuses are always read back from the run directories, the source of truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from ptl_cli import atomic, recipes
from ptl_cli.errors import UserError
from ptl_cli.schema import Params

SWEEP_FILE = "sweep.json"
RECIPE_AXIS = "recipe"  # a grid key that picks each cell's base recipe
LAUNCHERS = ("local", "slurm", "submitit-local")


class SlurmParams(Params):
    """Resources of each cell's Slurm job (submitit's parameters of the same names)."""

    partition: str | None = Field(None, description="Slurm partition")
    time: int = Field(60, ge=1, description="minutes per job before Slurm stops (and requeues) it")
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    account: str | None = None
    qos: str | None = None


class SweepTable(Params):
    """A recipe's ``[sweep]`` table: what ``ptl sweep --recipe FILE`` expands (single runs ignore it)."""

    grid: dict[str, list[Any]] = Field(default_factory=dict, description="key.path -> values")
    seeds: list[int] = Field(default_factory=list)
    jobs: int = Field(1, ge=1, description="cells run at once")
    launcher: str = "local"
    slurm: SlurmParams = SlurmParams()


@dataclass
class Cell:
    """One grid point with one seed: a run directory under ``SWEEP/runs``."""

    id: str
    point: dict[str, Any]
    seed: int
    status: str = "pending"  # pending | running | completed | failed | interrupted
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "point": self.point,
            "seed": self.seed,
            "status": self.status,
            "error": self.error,
        }


@dataclass
class Sweep:
    """A sweep directory and what it runs."""

    path: Path
    spec: dict[str, Any]  # recipe, kind, grid, seeds, sets: what identifies the sweep
    cells: list[Cell] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # how it runs (SweepTable): jobs, launcher

    @property
    def kind(self) -> str:
        return self.spec["kind"]

    def run_dir(self, cell: Cell) -> Path:
        return self.path / "runs" / cell.id

    def recipe_file(self, cell: Cell) -> Path:
        return self.path / "cells" / f"{cell.id}.toml"

    def log_file(self, cell: Cell) -> Path:
        return self.path / "logs" / f"{cell.id}.log"

    # -- the record ------------------------------------------------------------------------------
    @classmethod
    def open(cls, ref: str | os.PathLike[str]) -> Sweep:
        path = Path(ref)
        where = path / SWEEP_FILE
        try:
            data = json.loads(where.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path} is not a ptl sweep (no {SWEEP_FILE})") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{where} cannot be read: {exc}") from None
        try:
            cells = [Cell(**c) for c in data["cells"]]
            spec, options = data["spec"], data.get("options", {})
            if not (isinstance(spec, dict) and isinstance(spec["kind"], str) and isinstance(options, dict)):
                raise TypeError("spec")
            for key in ("grid", "seeds", "sets", "recipe"):
                spec[key]  # noqa: B018 - present, or the sweep cannot be continued
        except (KeyError, TypeError) as exc:
            raise UserError(f"{where} is broken ({type(exc).__name__}: {exc}); not a sweep record") from None
        return cls(path, spec, cells, options)

    def save(self) -> None:
        atomic.write_json(
            self.path / SWEEP_FILE,
            {
                "spec": self.spec,
                "options": self.options,
                "updated": time.time(),
                "cells": [c.as_dict() for c in self.cells],
            },
        )

    def refresh(self) -> None:
        """Each cell's status as its run directory says (a killed run counts as interrupted)."""
        from ptl_cli.runs import Run

        for cell in self.cells:
            run_dir = self.run_dir(cell)
            if not (run_dir / "run.json").is_file():
                cell.status = "failed" if cell.status == "failed" else "pending"
                continue
            run = Run(run_dir)
            try:
                info = run.info()
            except UserError as exc:
                cell.status, cell.error = "failed", str(exc)
                continue
            cell.status = "interrupted" if run.abandoned() else info["status"]
            cell.error = info.get("error", "") if cell.status != "completed" else ""


# -- expanding a grid ---------------------------------------------------------------------------
def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``--grid model.width=0.25,0.5`` items -> ``{"model.width": [0.25, 0.5]}``.

    Each value is read as TOML (numbers, booleans), else as a string; a value written as a TOML
    array (``--grid 'target.classes=[[0,1],[2,3]]'``) gives one cell per element.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--grid {item!r}: expected key.path=v1,v2,... e.g. --grid model.width=0.5,1")
        key, raw = (part.strip() for part in item.split("=", 1))
        if raw.startswith("["):
            _, values = recipes.parse_set(f"{key}={raw}")
            if not isinstance(values, list):
                raise UserError(f"--grid {item!r}: not a TOML array")
        else:
            values = [recipes.parse_set(f"{key}={v.strip()}")[1] for v in raw.split(",") if v.strip()]
        if not key or not values:
            raise UserError(f"--grid {item!r}: give a key and at least one value")
        if key in grid:
            raise UserError(f"--grid {key}: given twice; list all its values in one --grid")
        check_axis(key, values, f"--grid {item!r}")
        grid[key] = values
    return grid


def check_axis(key: str, values: list[Any], where: str) -> None:
    """One grid axis: not the seed (``--seeds`` sets it), and no value twice (two cells that are
    one run would count twice in every mean ± std)."""
    if key == "seed":
        raise UserError(f"{where}: the seed is not a grid axis; give seeds with --seeds (e.g. --seeds 0,1,2)")
    seen: list[str] = []
    for value in values:
        text = json.dumps(value, sort_keys=True, default=str)
        if text in seen:
            raise UserError(f"{where}: the value {value!r} is given twice; each grid value once")
        seen.append(text)


SEED_MAX = 2**64 - 1  # what torch.manual_seed takes


def check_seeds(seeds: list[Any], where: str) -> list[int]:
    """Integers in 0..2**64-1, none twice (two identical cells would count twice in mean ± std)."""
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
            raise UserError(f"{where}: seed {seed!r} is not an integer in 0..{SEED_MAX}")
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UserError(f"{where}: seed {twice[0]} is given twice; each seed once")
    return list(seeds)


def parse_seeds(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected integers such as 0,1,2") from None
    return check_seeds(seeds, f"--seeds {text}")


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_") or "x"


def expand(grid: dict[str, list[Any]], seeds: list[int]) -> list[Cell]:
    """Every grid point (the first key varying slowest) with every seed, named after its values."""
    import itertools

    keys = list(grid)
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) < len(keys):  # two keys end alike (model.width, pp.width)
        short = {k: k.replace(".", "-") for k in keys}
    cells, seen = [], set()
    for values in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, values, strict=True))
        for seed in seeds:
            name = "-".join([*(f"{short[k]}={_slug(v)}" for k, v in point.items()), f"seed={seed}"])
            ident, n = name, 1
            while ident in seen:  # values that slug alike ("a b", "a_b")
                n += 1
                ident = f"{name}-{n}"
            seen.add(ident)
            cells.append(Cell(ident, point, seed))
    return cells


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:8]


def cell_recipe(base: dict[str, Any], sets: list[str], cell: Cell) -> tuple[dict[str, Any], dict[str, str]]:
    """The cell's recipe data (base, then ``--set`` items, then grid values and seed) and where
    each overridden key came from, for error messages.

    A grid axis named ``recipe`` (``--grid recipe=iterand-conv6-cifar10,edge-popup-conv6-cifar10``)
    gives each cell its own base recipe: the way to sweep over methods whose recipes differ in
    more than one key (each pruner has its own parameters).
    """
    import copy

    if RECIPE_AXIS in cell.point:
        base = recipes.load_raw(str(cell.point[RECIPE_AXIS]))[0]
    data = copy.deepcopy(base)
    data.pop("sweep", None)
    data.pop("extends", None)  # already merged in; a relative `extends` would not resolve from cells/
    sources: dict[str, str] = {}
    for item in sets:
        key, value = recipes.parse_set(item)
        recipes.set_dotted(data, key, value, f"--set {item}")
        sources[key] = f"--set {item}"
    for key, value in cell.point.items():
        if key == RECIPE_AXIS:
            continue
        recipes.set_dotted(data, key, value, f"--grid {key}")
        sources[key] = f"--grid {key}={value}"
    data["seed"] = cell.seed
    sources["seed"] = f"seed {cell.seed}"
    return data, sources


# -- planning -----------------------------------------------------------------------------------
@dataclass
class Request:
    """What ``ptl sweep`` was asked: the command line merged with the recipe's ``[sweep]`` table."""

    recipe: str
    grid: list[str] = field(default_factory=list)
    seeds: str | None = None
    sets: list[str] = field(default_factory=list)
    jobs: int | None = None
    launcher: str | None = None
    out: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


def plan(request: Request) -> tuple[Sweep, SweepTable, dict[str, Any]]:
    """Resolve the request into a :class:`Sweep` (not yet written) and validate every cell.

    Each cell's recipe is validated against its workflow's schema and planned by the workflow
    (the checks ``--dry-run`` of a single run makes), so an unknown grid key or an impossible
    value is a one-line error before anything runs.
    """
    from ptl_cli.schema import validate_model

    command_grid = parse_grid(request.grid)
    ref = request.recipe or next(iter(command_grid.get(RECIPE_AXIS, [])), None)
    if not ref:
        raise UserError(
            "ptl sweep needs --recipe NAME|FILE (a prune, transfer or train-source recipe) or a "
            "--grid recipe=NAME,NAME axis"
        )
    base, path = recipes.load_raw(str(ref))
    table = validate_model(SweepTable, base.get("sweep") or {}, f"recipe {path}: [sweep]")
    for key, values in table.grid.items():
        if key not in command_grid:
            check_axis(key, values, f"recipe {path}: [sweep] grid `{key}`")
    grid = {**table.grid, **command_grid}
    if table.seeds and not request.seeds:
        check_seeds(table.seeds, f"recipe {path}: [sweep] seeds")
    for value in grid.get(RECIPE_AXIS, []):
        recipes.find(str(value))  # an unknown recipe name is a one-line error here
    seeds = parse_seeds(request.seeds) or table.seeds or [int(base.get("seed", 0))]
    updates: dict[str, Any] = {}
    if request.jobs is not None:
        updates["jobs"] = request.jobs
    if request.launcher is not None:
        updates["launcher"] = request.launcher
    if request.slurm:
        merged = {**table.slurm.model_dump(), **{k: v for k, v in request.slurm.items() if v is not None}}
        updates["slurm"] = validate_model(SlurmParams, merged, "--slurm options")
    table = table.model_copy(update=updates)
    if table.launcher not in LAUNCHERS:
        raise UserError(f"--launcher {table.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if table.jobs < 1:
        raise UserError("--jobs must be at least 1")
    if table.launcher != "local":
        from ptl_cli.sweep_slurm import check_launcher

        check_launcher(table.launcher)
    kind = base.get("kind")
    if not isinstance(kind, str):
        raise UserError(f"recipe {path}: no `kind`; a sweep needs a prune, transfer or train-source recipe")
    sets = list(request.sets)
    if request.log:
        sets.append(f"compute.log={json.dumps(request.log)}")
    spec = {"recipe": str(path), "kind": kind, "grid": grid, "seeds": seeds, "sets": sets}
    if request.out:
        out = Path(request.out)
    else:
        from ptl_cli.runs import runs_root

        out = runs_root() / f"sweep-{base.get('name') or kind}-{spec_digest(spec)}"
    sweep = Sweep(out, spec, expand(grid, seeds), table.model_dump())
    check_out(sweep)
    validate_cells(sweep, base)
    return sweep, table, base


def check_out(sweep: Sweep) -> None:
    """The sweep's folder: new, empty, or this same sweep (continued) -- never a run, another
    sweep, a file or a folder of other things. Checked by ``--dry-run`` too."""
    from ptl_cli import outputs

    if (sweep.path / SWEEP_FILE).is_file():
        old = Sweep.open(sweep.path)
        if old.spec != sweep.spec:
            raise UserError(
                f"{sweep.path} holds another sweep ({_describe(old.spec)}); choose another --out, "
                f"or continue that one with `ptl resume {sweep.path}`"
            )
        return
    outputs.check_cache_dir()
    outputs.check_run_dir(sweep.path, "--out")


def validate_cells(sweep: Sweep, base: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """Each cell's recipe validated and planned by its workflow; the plans' rows, per cell."""
    from ptl_cli.launch import check_compute, load_workflow, workflow_spec

    spec = workflow_spec(sweep.kind)
    workflow = load_workflow(sweep.kind)
    plans = []
    for cell in sweep.cells:
        data, sources = cell_recipe(base, sweep.spec["sets"], cell)
        where = f"recipe {cell.point.get(RECIPE_AXIS, sweep.spec['recipe'])} (cell {cell.id})"
        if data.get("kind") != sweep.kind:
            raise UserError(f"{where}: a `{data.get('kind')}` recipe in a sweep of `{sweep.kind}` runs")
        resolved = recipes.validate(data, spec.params, where, sources)
        check_compute(resolved.model.compute)
        plans.append(list(workflow.plan(resolved.model)))
    return plans


def prepare(sweep: Sweep, base: dict[str, Any]) -> None:
    """Create the sweep directory (or check that it holds this same sweep) and the cells' recipes."""
    record = sweep.path / SWEEP_FILE
    check_out(sweep)
    try:
        sweep.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {sweep.path}: cannot create it: {exc.strerror}") from None
    claim(sweep.path)
    if record.is_file():
        check_out(sweep)  # again, now that this process holds the sweep
        sweep.cells = Sweep.open(sweep.path).cells  # last known statuses; refreshed from the runs
    for sub in ("cells", "runs", "logs"):
        (sweep.path / sub).mkdir(parents=True, exist_ok=True)
    for cell in sweep.cells:
        data, _ = cell_recipe(base, sweep.spec["sets"], cell)
        target = sweep.recipe_file(cell)
        text = recipes.dumps(data)
        if target.is_file() and target.read_text() != text:
            # the cells that ran used the old text: mixing two recipes in one table would mislead
            raise UserError(
                f"{sweep.spec['recipe']} changed since {sweep.path} was started (cell {cell.id}); "
                "choose another --out for the new recipe, or restore the old one to continue"
            )
        if not target.is_file():
            atomic.write_text(target, text)
    sweep.refresh()
    sweep.save()


def _describe(spec: dict[str, Any]) -> str:
    grid = " ".join(f"{k}={','.join(map(str, v))}" for k, v in spec["grid"].items())
    return f"recipe {Path(spec['recipe']).name}, grid {grid or '(none)'}, seeds {spec['seeds']}"


# -- running cells -------------------------------------------------------------------------------
def cell_command(sweep: Sweep, cell: Cell) -> list[str]:
    """The ``ptl`` command line that starts (or continues) a cell: the ordinary run path."""
    run_dir = sweep.run_dir(cell)
    if (run_dir / "run.json").is_file():
        return [sys.executable, "-m", "ptl_cli", "resume", str(run_dir), "--quiet"]
    return [sys.executable, "-m", "ptl_cli", "run", "--recipe", str(sweep.recipe_file(cell)),
            "--out", str(run_dir), "--quiet"]  # fmt: skip


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a cell: OpenMP and MKL capped at ``threads`` intra-op threads.

    A lower cap the user set (``OMP_NUM_THREADS=1``) is kept, and both variables get the same
    value: torch takes its thread count from them, and a run computes bit for bit what an
    uninterrupted run computes only with the same count.
    """
    env = dict(os.environ if base is None else base)
    caps = [
        int(env[n])
        for n in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
        if env.get(n, "").isdigit() and int(env[n]) > 0
    ]
    count = str(min([max(1, threads), *caps]))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = count
    return env


def share_of_cores(jobs: int) -> int:
    """Threads per cell when ``jobs`` cells share this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def last_error(log: Path) -> str:
    """The last ``ptl: error:`` line of a cell's log (or its last line): why it failed."""
    try:
        text = log.read_text(errors="replace")
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("$ ")]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("ptl: error:")]
    return (errors or lines or [""])[-1].removeprefix("ptl: error: ")


def finish_cell(sweep: Sweep, cell: Cell, returncode: int) -> None:
    """Record a cell's outcome from its run directory (and its log when it left no run)."""
    sweep.refresh()
    if cell.status == "completed":  # the run says so, whatever ended the process afterwards
        return
    if returncode == 130 or cell.status == "interrupted":
        cell.status = "interrupted"
        return
    cell.status = "failed"
    cell.error = cell.error or last_error(sweep.log_file(cell)) or f"exit status {returncode}"


def to_run(sweep: Sweep) -> list[Cell]:
    return [c for c in sweep.cells if c.status != "completed"]


def _live_owner(run_dir: Path) -> int | None:
    from ptl_cli.runs import Run

    return Run(run_dir).live_owner() if (run_dir / "run.json").is_file() else None


class LocalPool:
    """Up to ``jobs`` cells at once as child processes; SIGINT/SIGTERM stop them cleanly.

    A signal is passed on to every running cell (each saves a checkpoint and exits with 130,
    as a single run does), the sweep records them as interrupted and exits with 130 too.
    """

    def __init__(self, sweep: Sweep, jobs: int, progress: Any) -> None:
        self.sweep, self.jobs, self.progress = sweep, jobs, progress
        self.running: dict[str, tuple[Cell, subprocess.Popen]] = {}
        self.stop: int | None = None

    def _signal(self, signum: int, _frame: Any) -> None:
        self.stop = signum
        for _, proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def run(self) -> None:
        pending = [c for c in to_run(self.sweep) if not self._owned_elsewhere(c)]
        env = thread_env(share_of_cores(self.jobs))
        old = {s: signal.signal(s, self._signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while (pending and self.stop is None) or self.running:
                while pending and self.stop is None and len(self.running) < self.jobs:
                    cell = pending.pop(0)
                    self._start(cell, env)
                for ident, (cell, proc) in list(self.running.items()):
                    code = proc.poll()
                    if code is not None:
                        del self.running[ident]
                        finish_cell(self.sweep, cell, code)
                        self.sweep.save()
                        self.progress.finished(cell)
                self.progress.update(self.running)
                time.sleep(0.1)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        if self.stop is not None:
            self.sweep.save()
            raise SystemExit(130)

    def _owned_elsewhere(self, cell: Cell) -> bool:
        """A cell another live process still runs (a sweep killed with SIGKILL leaves its cells
        running): it is left alone, and reported, instead of failing on the run's lock."""
        owner = _live_owner(self.sweep.run_dir(cell))
        if owner is None or owner == os.getpid():
            return False
        cell.status = "running"
        return True

    def _start(self, cell: Cell, env: dict[str, str]) -> None:
        command = cell_command(self.sweep, cell)
        log = self.sweep.log_file(cell).open("a")
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # its own process group: a Ctrl-C in the terminal reaches the sweep, which passes it on
        proc = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        cell.status = "running"
        self.running[cell.id] = (cell, proc)
        self.sweep.save()
        self.progress.started(cell)


def execute(sweep: Sweep, table: SweepTable, quiet: bool) -> int:
    """Run the cells that are not completed; returns the exit status (0: all completed)."""
    from ptl_cli.runs import Run

    try:
        return _execute(sweep, table, quiet)
    finally:
        Run(sweep.path).release()  # claimed by prepare() or resume(): the command is over


def _execute(sweep: Sweep, table: SweepTable, quiet: bool) -> int:
    from ptl_cli.sweep_progress import SweepProgress

    cells = to_run(sweep)
    done = len(sweep.cells) - len(cells)
    out = _console()
    if not quiet:
        out.print(
            f"[bold]sweep[/] {sweep.path}: {len(sweep.cells)} cells ({sweep.kind}), {done} completed, "
            f"{len(cells)} to run with {table.launcher} launcher"
        )
    with SweepProgress(sweep, enabled=not quiet) as progress:
        if table.launcher == "local":
            LocalPool(sweep, table.jobs, progress).run()
        else:
            from ptl_cli.sweep_slurm import run_submitit

            run_submitit(sweep, table, progress)
    sweep.refresh()
    sweep.save()
    failed = [c for c in sweep.cells if c.status == "failed"]
    unfinished = [c for c in sweep.cells if c.status not in ("completed", "failed")]
    for cell in failed:
        out.print(f"[red]failed[/] {cell.id}: {cell.error}  (log: {sweep.log_file(cell)})")
    if not quiet or failed or unfinished:
        completed = sum(c.status == "completed" for c in sweep.cells)
        out.print(
            f"{completed}/{len(sweep.cells)} cells completed; `ptl sweep show {sweep.path}` aggregates them"
        )
    for cell in unfinished:
        owner = _live_owner(sweep.run_dir(cell))
        if owner is not None:
            out.print(f"{cell.id} is still being run by process {owner}; left to it")
    if unfinished:
        out.print(f"continue with: ptl resume {sweep.path}")
    return 1 if failed or unfinished else 0


def resume(ref: str, jobs: int | None = None, quiet: bool = False) -> int:
    """``ptl resume SWEEP``: run the cells of an existing sweep that are not completed, with the
    launcher and resources it was started with (their recipes are in ``SWEEP/cells``)."""
    from ptl_cli.schema import validate_model

    sweep = Sweep.open(ref)
    claim(sweep.path)
    table = validate_model(SweepTable, sweep.options, f"{sweep.path}/{SWEEP_FILE}")
    if jobs is not None:
        table = table.model_copy(update={"jobs": jobs})
    sweep.refresh()
    sweep.save()
    return execute(sweep, table, quiet)


def claim(path: Path) -> None:
    """One process drives a sweep at a time (a flock on ``SWEEP/.lock``, as for a run)."""
    from ptl_cli.runs import Run

    Run(path).claim(what="sweep")


def _console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)
