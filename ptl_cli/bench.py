"""``ptl bench``: how fast training steps and data loading run on this device, to size runs.

The core holds the command, its shared flags and the timing helpers; the benchmarks themselves
come from plugins, registered through the ``ptl_register_benchmarks`` hook exactly as a third
party registers one (the prune plugin's ``prune``, the transfer plugin's ``transfer``), except
``photo`` (the core's photo data path against torchvision's), which the core registers itself.
``ptl bench NAME...`` runs the named benchmarks in that order; a bare ``ptl bench`` runs those
registered with ``default=True``, by name. Every benchmark runs in one process, on one
:class:`Bench` (device, ``[compute]`` fast paths, steps), so ratios compare like with like.

A benchmark is ``run(bench, *, option=default, ...) -> Report | list[Report]``. Its keyword-only
parameters, annotated as Typer options, become options of ``ptl bench`` (``--k-per`` is the
prune benchmark's): a plugin adds its flags without the core knowing them. Timing goes through
:func:`time_per_call` / :meth:`Bench.time`; results are :class:`Row`\\ s of a :class:`Report`,
printed as a table or, with ``--json``, as a list of :meth:`Report.as_dict`.

Importing this module stays cheap (no torch): ``ptl --help`` lists the command.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer

from ptl_cli import options
from ptl_cli.errors import UserError


@dataclass
class Row:
    what: str
    images_per_step: int
    seconds_per_step: float
    note: str = ""

    @property
    def images_per_second(self) -> float:
        return self.images_per_step / self.seconds_per_step if self.seconds_per_step > 0 else float("inf")


@dataclass
class Report:
    workflow: str
    device: str
    config: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "device": self.device,
            "config": self.config,
            "rows": [
                {
                    "what": r.what,
                    "images_per_step": r.images_per_step,
                    "ms_per_step": round(1000 * r.seconds_per_step, 3),
                    "images_per_s": round(r.images_per_second, 1),
                    "note": r.note,
                }
                for r in self.rows
            ],
            "ratios": {k: round(v, 4) for k, v in self.ratios.items()},
        }


# -- timing ------------------------------------------------------------------------------------
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], Any], device: Any, steps: int, warmup: int, repeats: int = 3) -> float:
    """Seconds per call: the median over ``repeats`` of the mean over ``steps`` calls.

    The device is synchronized around each timed block, not inside it, so asynchronous
    execution (and prefetching) overlaps as it does in training.
    """
    import statistics

    for _ in range(warmup):
        fn()
    _sync(device)
    results = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        results.append((time.perf_counter() - started) / steps)
    return statistics.median(results)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# -- what every benchmark gets -----------------------------------------------------------------
@dataclass
class Bench:
    """The device as ``[compute]`` asks, the timing settings and the flags every benchmark shares.

    ``model`` and ``batch_size`` are ``None`` unless given: each benchmark has its own defaults.
    """

    device: Any
    compute: Any
    precision: Any
    steps: int
    warmup: int
    model: str | None = None
    width: float = 1.0
    dataset: str = "fashion-pack"
    batch_size: int | None = None
    as_json: bool = False

    def batch(self, gpu: int, cpu: int) -> int:
        """``--batch-size``, else ``gpu``, or ``cpu`` on a CPU (so a bare ``ptl bench`` takes minutes)."""
        return self.batch_size or (cpu if self.device.type == "cpu" else gpu)

    def time(self, fn: Callable[[], Any], steps: int | None = None, warmup: int | None = None) -> float:
        """:func:`time_per_call` with ``--steps``/``--warmup`` unless given."""
        return time_per_call(fn, self.device, steps or self.steps, self.warmup if warmup is None else warmup)

    def load_dataset(self, name: str | None = None) -> Any:
        """The train split of ``name`` (default ``--dataset``), from the dataset registry."""
        from ptl_cli import plugins
        from ptl_cli.data.locations import data_dir

        name = name or self.dataset
        return plugins.get("datasets", name).build(
            str(data_dir(None)), "train", False, where=f"--dataset {name}"
        )

    def build_model(self, name: str, info: Any, num_classes: int | None = None) -> Any:
        """Model ``name`` at ``--width`` for a dataset's images, from the model registry."""
        from ptl_cli import plugins

        classes = num_classes or info.num_classes
        spec = plugins.get("models", name)
        return spec.build(classes, info.channels, info.image_size, self.width, where=f"--model {name}")

    def measure_loader(self, source: Iterator[Any], images: int) -> tuple[Row, Any]:
        """Time ``source`` (endless) through the prefetching loader; also return one device batch."""
        from ptl_cli.data.loader import prefetch

        with prefetch(source, self.device) as loader:
            batches = iter(loader)
            seconds = self.time(lambda: next(batches))
            sample = next(batches)
        return Row("loader", images, seconds, "gather + to device, prefetched"), sample

    def flags(self) -> dict[str, Any]:
        """The settings a report's ``config`` records next to its own."""
        c = self.compute
        precision = c.precision if self.precision.enabled else f"{c.precision} (fp32 on {self.device.type})"
        return {
            "precision": precision,
            "channels_last": c.channels_last,
            "compile": c.compile,
            "workers": c.workers,
            "steps": self.steps,
            "threads": _threads(),
        }

    def echo(self, text: str) -> None:
        """Progress text for the terminal (nothing under ``--json``)."""
        if not self.as_json:
            typer.echo(text)


def _setup(
    device: str, precision: str, channels_last: bool, compile_: bool, workers: int, steps: int, warmup: int
) -> Bench:
    import torch

    from ptl_cli.engine.device import Precision, resolve_device
    from ptl_cli.recipes import Compute

    dev = resolve_device(device)
    compute = Compute(
        device=str(dev), precision=precision, channels_last=channels_last, compile=compile_, workers=workers
    )
    torch.manual_seed(0)
    return Bench(dev, compute, Precision(precision, dev), steps, warmup)


# -- the benchmarks: registered by plugins (and photo by the core) -----------------------------
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class BenchmarkError(ValueError):
    """A ``ptl_register_benchmarks`` call was malformed; the message says what to fix."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    run: Callable[..., Any]
    description: str = ""
    default: bool = False
    plugin: str = "ptl"
    #: the keyword-only parameters of ``run``: options of ``ptl bench``
    options: tuple[inspect.Parameter, ...] = ()


class Register:
    """The ``register`` a ``ptl_register_benchmarks`` hook receives (bound to one plugin)::

    register(name, run, description="", default=False)

    ``run`` is a callable or a ``"module:attr"`` string (imported now: its options are read from
    its signature). ``default=True``: a bare ``ptl bench`` runs it.
    """

    def __init__(self, table: dict[str, Benchmark], plugin: str, reserved: set[str]) -> None:
        self.table, self.plugin, self.reserved = table, plugin, reserved

    def __call__(
        self, name: str, run: Callable[..., Any] | str, description: str = "", default: bool = False
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise BenchmarkError(f"benchmark name {name!r} must be lower case ([a-z0-9][a-z0-9_-]*)")
        if name in self.table:
            raise BenchmarkError(f"benchmark {name!r} is already registered by {self.table[name].plugin}")
        if isinstance(run, str):
            module, _, attr = run.partition(":")
            run = getattr(importlib.import_module(module), attr)
        if not callable(run):
            raise BenchmarkError(f"benchmark {name!r}: run must be a callable or a 'module:attr' string")
        params = list(inspect.signature(run, eval_str=True).parameters.values())
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            raise BenchmarkError(f"benchmark {name!r}: run must take the Bench as its first argument")
        taken = self.reserved | {p.name: b.name for b in self.table.values() for p in b.options}.keys()
        for p in params[1:]:
            if p.kind is not p.KEYWORD_ONLY or p.default is p.empty:
                raise BenchmarkError(
                    f"benchmark {name!r}: option {p.name!r} must be keyword-only with a default"
                )
            if p.name in taken:
                raise BenchmarkError(
                    f"benchmark {name!r}: option {p.name!r} is already an option of ptl bench"
                )
        first = description.strip().splitlines()[0] if description.strip() else ""
        self.table[name] = Benchmark(name, run, first, bool(default), self.plugin, tuple(params[1:]))


def benchmarks() -> dict[str, Benchmark]:
    """Every registered benchmark by name: the core's, then each plugin's in load order.

    A plugin whose hook raises (or registers something malformed) is marked failed, as for
    components, and what it registered is dropped; the other benchmarks keep working.
    """
    from ptl_cli import plugins

    table: dict[str, Benchmark] = {}
    reserved = set(inspect.signature(_core_options).parameters)
    core = Register(table, "ptl", reserved)
    core("photo", bench_photo, "ptl's photo loader against torchvision's ImageFolder + PIL")
    manager = plugins.manager()
    for impl in manager.pm.hook.ptl_register_benchmarks.get_hookimpls():  # load order, as registries
        before = dict(table)
        try:
            impl.function(register=Register(table, impl.plugin_name, reserved))
        except Exception as exc:  # noqa: BLE001 - isolate a broken plugin's hook
            table = before
            message = str(exc) if isinstance(exc, BenchmarkError) else f"{type(exc).__name__}: {exc}"
            manager._registration_failed(
                manager.plugins.get(impl.plugin_name), f"ptl_register_benchmarks: {message}"
            )
    return table


# -- the command -------------------------------------------------------------------------------
def _core_options(
    what: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(help="Benchmarks to run (default: those marked default)."),
    ] = None,
    device: options.Device = None,
    model: Annotated[Optional[str], typer.Option(help="Model plugin (default: each benchmark's).")] = None,  # noqa: UP045
    width: Annotated[float, typer.Option(help="Model width factor.")] = 1.0,
    dataset: Annotated[str, typer.Option(help="Dataset plugin (its train split).")] = "fashion-pack",
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option("--batch-size", "-b", help="Batch size (default: each benchmark's; smaller on a CPU)."),
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32 | bf16-mixed | fp16-mixed (GPU only).")] = "fp32",
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last (CUDA).")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    workers: Annotated[int, typer.Option(help="Data-loader worker processes.")] = 0,
    steps: Annotated[int, typer.Option(help="Timed steps per measurement (×3 repeats).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 2,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
    as_json: options.Json = False,
) -> None:
    """The options ``ptl bench`` has whatever benchmarks are installed (their signature only)."""


def _listed(table: dict[str, Benchmark]) -> list[str]:
    """Names as help and errors list them: the defaults first, each group by name."""
    return sorted(table, key=lambda n: (not table[n].default, n))


def _what_help(table: dict[str, Benchmark]) -> str:
    names = "; ".join(f"{n}: {table[n].description}" if table[n].description else n for n in _listed(table))
    defaults = ", ".join(n for n in _listed(table) if table[n].default) or "none"
    return f"Benchmarks to run (default: {defaults}). {names}."


class _Command:
    """Images/s of training steps on this device, and whether data loading keeps up."""

    __name__ = "bench"
    __qualname__ = "bench"
    __module__ = __name__

    @property
    def __signature__(self) -> inspect.Signature:
        """The core's options, then every benchmark's own: Typer reads this to build the command."""
        table = benchmarks()
        core = list(inspect.signature(_core_options, eval_str=True).parameters.values())
        what = core[0]
        core[0] = what.replace(
            annotation=Annotated[Optional[list[str]], typer.Argument(help=_what_help(table))]  # noqa: UP045
        )
        extra = [p for b in table.values() for p in b.options]
        return inspect.Signature([*core, *extra])

    @property
    def __annotations__(self) -> dict[str, Any]:  # type: ignore[override]
        return {p.name: p.annotation for p in self.__signature__.parameters.values()}

    def __call__(self, **values: Any) -> None:
        table = benchmarks()
        what = values["what"]
        chosen = list(dict.fromkeys(what)) if what else sorted(n for n, b in table.items() if b.default)
        unknown = [w for w in chosen if w not in table]
        if unknown:
            raise UserError(f"ptl bench: unknown {unknown[0]!r}; choose from {', '.join(_listed(table))}")
        precision, steps, batch_size = values["precision"], values["steps"], values["batch_size"]
        if precision not in ("fp32", "bf16-mixed", "fp16-mixed"):
            raise UserError(f"--precision {precision!r}: use fp32, bf16-mixed or fp16-mixed")
        if steps < 1 or (batch_size is not None and batch_size < 2):
            raise UserError("--steps must be >= 1 and --batch-size >= 2")
        if values["threads"] > 0:
            import torch

            torch.set_num_threads(values["threads"])
        bench = _setup(
            values["device"] or "auto",
            precision,
            values["channels_last"],
            values["compile_"],
            values["workers"],
            steps,
            values["warmup"],
        )
        bench.model, bench.width, bench.dataset = values["model"], values["width"], values["dataset"]
        bench.batch_size, bench.as_json = batch_size, values["as_json"]
        reports: list[Report] = []
        for name in chosen:
            b = table[name]
            out = b.run(bench, **{p.name: values[p.name] for p in b.options})
            reports.extend(out if isinstance(out, list) else [out])
        if bench.as_json:
            typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
            return
        _print(reports)


command = _Command()


def _print(reports: list[Report]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    for report in reports:
        config = ", ".join(f"{k} {v}" for k, v in report.config.items())
        table = Table(title=f"ptl bench {report.workflow} on {report.device}", caption=config)
        for col in ("what", "images/step", "ms/step", "images/s", ""):
            table.add_column(
                col, justify="right" if col in ("images/step", "ms/step", "images/s") else "left"
            )
        for r in report.rows:
            ips = f"{r.images_per_second:,.0f}" if r.images_per_step else "-"
            table.add_row(
                r.what, str(r.images_per_step or "-"), f"{1000 * r.seconds_per_step:,.2f}", ips, r.note
            )
        console.print(table)
        for key, value in report.ratios.items():
            console.print(f"  {key.replace('_', ' ')}: [bold]{value:.4g}[/]")
        ratio = report.ratios.get("loader_vs_step_throughput")
        if ratio is not None and ratio < 1:
            console.print(
                "  [yellow]data loading is the bottleneck: raise --workers or keep data in memory[/]"
            )


# -- the core's own benchmark: the photo data path ---------------------------------------------
def bench_photo(
    bench: Bench,
    *,
    data_dir: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--data-dir", help="photo: an image folder DIR/<class>/<image> (default: generated)."),
    ] = None,
    photos: Annotated[int, typer.Option(help="photo: generated 500×375 JPEGs without --data-dir.")] = 256,
    image_size: Annotated[int, typer.Option("--image-size", help="photo: crop side.")] = 224,
    reps: Annotated[int, typer.Option(help="photo: interleaved passes over the folder per loader.")] = 5,
) -> Report:
    """ptl's photo loader against torchvision's (:mod:`ptl_cli.bench_photo`)."""
    from ptl_cli import bench_photo as photo

    workers = bench.compute.workers
    flags = {"workers": workers, "threads": _threads()}
    return photo.bench_photo(
        data_dir, photos, bench.batch(32, 32), workers, image_size, reps, flags, bench.echo
    )
