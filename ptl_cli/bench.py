"""``ptl bench``: how fast prune and transfer training steps run on this device, to size runs.

For each workflow it times, in one process and one run (so ratios compare like with like):

* the **loader**: uint8 batches fetched the way the training loops fetch them (a resumable
  sampler over the dataset for prune; random gathers from the labeled set and from a
  pseudo-sample pool for transfer) and brought to the device by the prefetching loader;
* the **step**: augmentation on the device, forward, backward and optimizer step, with the
  ``[compute]`` fast paths asked for (precision, channels_last, torch.compile);

and prints images/s and the ratios that matter: loader/step throughput (>= 1: data loading is
not the bottleneck), supermask step vs dense step, IteRand's re-draw amortized over ``K_per``
steps, FixMatch step vs supervised step. Components come from the registries, so
``--model``/``--dataset`` accept any installed plugin. The built-in ``ptl_ssl`` plugin supplies
the SSL views (its batched RandAugment).

Importing this module stays cheap (no torch): ``ptl --help`` lists the command.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer

from ptl_cli import options
from ptl_cli.errors import UserError

WHATS = ("prune", "transfer", "photo")
#: what a bare ``ptl bench`` runs
DEFAULT_WHATS = ("prune", "transfer")


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


def _measure_loader(source: Iterator[Any], images: int, s: Setup) -> tuple[Row, Any]:
    """Time ``source`` (endless) through the prefetching loader; also return one device batch."""
    from ptl_cli.data.loader import prefetch

    with prefetch(source, s.device) as loader:
        batches = iter(loader)
        seconds = time_per_call(lambda: next(batches), s.device, s.steps, s.warmup)
        sample = next(batches)
    return Row("loader", images, seconds, "gather + to device, prefetched"), sample


# -- shared setup ------------------------------------------------------------------------------
@dataclass
class Setup:
    device: Any
    compute: Any
    precision: Any
    steps: int
    warmup: int


def _setup(
    device: str, precision: str, channels_last: bool, compile_: bool, workers: int, steps: int, warmup: int
):
    import torch

    from ptl_cli.engine.device import Precision, resolve_device
    from ptl_cli.recipes import Compute

    dev = resolve_device(device)
    compute = Compute(
        device=str(dev), precision=precision, channels_last=channels_last, compile=compile_, workers=workers
    )
    torch.manual_seed(0)
    return Setup(dev, compute, Precision(precision, dev), steps, warmup)


def _dataset(name: str) -> Any:
    from ptl_cli import plugins
    from ptl_cli.data.locations import data_dir

    return plugins.get("datasets", name).build(str(data_dir(None)), "train", False, where=f"--dataset {name}")


def _model(name: str, width: float, info: Any, num_classes: int | None = None) -> Any:
    from ptl_cli import plugins

    classes = num_classes or info.num_classes
    spec = plugins.get("models", name)
    return spec.build(classes, info.channels, info.image_size, width, where=f"--model {name}")


def _train_step(
    model: Any, params: list[Any], s: Setup, batch: Callable[[], tuple[Any, Any]]
) -> Callable[[], None]:
    """One SGD step (forward, cross-entropy, backward, step) on ``batch()``."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)

    def step() -> None:
        x, y = batch()
        with s.precision.autocast():
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        s.precision.backward_and_step(loss, optimizer)

    return step


# -- prune -------------------------------------------------------------------------------------
def bench_prune(s: Setup, model_name: str, width: float, dataset: str, batch_size: int, k_per: int) -> Report:
    """Loader, augmentation, dense step, supermask step and IteRand re-draw for one model."""
    import torch
    from torch.utils.data import DataLoader

    from ptl_cli import plugins
    from ptl_cli.data import augment
    from ptl_cli.data.base import collate, normalize, to_float
    from ptl_cli.data.sampler import ResumableSampler
    from ptl_cli.engine.compute import prepare_model, to_device

    data = _dataset(dataset)
    info = data.info
    report = Report(
        "prune",
        str(s.device),
        {"model": model_name, "width": width, "dataset": dataset, "batch_size": batch_size, **_flags(s)},
    )

    def batches() -> Iterator[Any]:
        sampler = ResumableSampler(len(data), seed=0)
        loader = DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=s.compute.workers,
            drop_last=True,
            generator=torch.Generator(),
        )
        for epoch in range(10**9):
            sampler.set_epoch(epoch)
            yield from loader

    row, (images, targets) = _measure_loader(batches(), batch_size, s)
    report.rows.append(row)

    def views() -> Any:
        x = to_float(images)
        x = augment.random_resized_crop(torch.nn.functional.pad(x, (4,) * 4), size=x.shape[-1])
        return normalize(augment.random_flip(x), info.mean, info.std)

    seconds_aug = time_per_call(views, s.device, s.steps, s.warmup)
    report.rows.append(Row("augmentation", batch_size, seconds_aug, "pad, resized crop, flip"))

    def batch() -> tuple[Any, Any]:
        return to_device(views(), s.device, s.compute.channels_last), targets

    dense, dense_train = prepare_model(_model(model_name, width, info), s.compute, s.device)
    step_dense = time_per_call(
        _train_step(dense_train, list(dense.parameters()), s, batch), s.device, s.steps, s.warmup
    )
    report.rows.append(Row("dense step", batch_size, step_dense, "augment + fwd + bwd + SGD"))

    pruner = plugins.get("pruners", "iterand").build(params={"rerand_freq": k_per})
    masked = pruner.prepare(_model(model_name, width, info), 0)
    masked, masked_train = prepare_model(masked, s.compute, s.device)
    params = list(pruner.trainable_parameters(masked))
    step_mask = time_per_call(_train_step(masked_train, params, s, batch), s.device, s.steps, s.warmup)
    report.rows.append(Row("supermask step", batch_size, step_mask, "scores trained"))

    counter = iter(range(1, 10**9))
    redraw = time_per_call(
        lambda: pruner.after_step(masked, k_per * next(counter)), s.device, max(1, s.steps // 4), 1
    )
    report.rows.append(Row("iterand re-draw", 0, redraw, f"every K_per={k_per} steps"))

    loader_ips = report.rows[0].images_per_second
    report.ratios = {
        "loader_vs_step_throughput": loader_ips / (batch_size / step_mask),
        "supermask_vs_dense_step_time": step_mask / step_dense,
        "redraw_overhead_at_k_per": redraw / (k_per * step_mask),
        "augmentation_share_of_step": seconds_aug / step_mask,
    }
    return report


# -- transfer ----------------------------------------------------------------------------------
def bench_transfer(
    s: Setup, model_name: str, width: float, dataset: str, batch_size: int, mu: int, pool_size: int
) -> Report:
    """Loader, strong augmentation, supervised step and FixMatch step (labeled B + μB pool samples)."""
    import torch

    from ptl_cli import plugins
    from ptl_cli.data.loader import step_batches
    from ptl_cli.engine.compute import prepare_model

    try:
        from ptl_ssl.views import make_views
    except ImportError:
        raise UserError("ptl bench transfer needs the built-in ptl_ssl plugin (its SSL views)") from None

    data = _dataset(dataset)
    info = data.info
    images = data.images if hasattr(data, "images") else torch.stack([data[i][0] for i in range(len(data))])
    labels = data.targets
    # the pool stand-in: uint8 images gathered at random, as PoolData.gather does from memory
    reps = -(-pool_size // images.shape[0])
    pool = images.repeat(reps, 1, 1, 1)[:pool_size].contiguous()
    report = Report(
        "transfer",
        str(s.device),
        {
            "model": model_name,
            "width": width,
            "dataset": dataset,
            "batch_size": batch_size,
            "mu": mu,
            "pool_size": pool_size,
            **_flags(s),
        },
    )

    def fetch_step(step: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(step)
        lab = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        unl = torch.randint(0, pool.shape[0], (mu * batch_size,), generator=gen)
        return {"x": images[lab], "y": labels[lab], "u": pool[unl]}

    per_step = batch_size * (1 + mu)
    row, batch = _measure_loader(step_batches(fetch_step, 0, 10**9), per_step, s)
    report.rows.append(row)

    def strong_views() -> Any:
        return make_views(batch["u"], ("weak", "strong"), info.mean, info.std)

    seconds_aug = time_per_call(strong_views, s.device, s.steps, s.warmup)
    report.rows.append(Row("unlabeled views", mu * batch_size, seconds_aug, "weak + strong (RandAugment)"))

    def ssl_step(name: str) -> Callable[[], None]:
        algo = plugins.get("ssl", name).build(info.num_classes)
        model, train_model = prepare_model(_model(model_name, width, info), s.compute, s.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True)

        def step() -> None:
            vx = make_views(batch["x"], algo.labeled_views, info.mean, info.std)
            vu = (
                make_views(batch["u"], algo.unlabeled_views, info.mean, info.std)
                if algo.unlabeled_views
                else {}
            )
            with s.precision.autocast():
                loss, _ = algo.loss(train_model, vx, batch["y"], vu, 0, 1)
            optimizer.zero_grad(set_to_none=True)
            s.precision.backward_and_step(loss, optimizer)

        return step

    sup = time_per_call(ssl_step("supervised"), s.device, s.steps, s.warmup)
    report.rows.append(Row("supervised step", batch_size, sup, "B labeled images"))
    fix = time_per_call(ssl_step("fixmatch"), s.device, s.steps, s.warmup)
    report.rows.append(Row("fixmatch step", batch_size * (1 + 2 * mu), fix, "B + 2μB images"))
    report.ratios = {
        "loader_vs_step_throughput": report.rows[0].images_per_second / (per_step / fix),
        "fixmatch_vs_supervised_step_time": fix / sup,
        "unlabeled_views_share_of_step": seconds_aug / fix,
    }
    return report


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _flags(s: Setup) -> dict[str, Any]:
    c = s.compute
    return {
        "precision": c.precision if s.precision.enabled else f"{c.precision} (fp32 on {s.device.type})",
        "channels_last": c.channels_last,
        "compile": c.compile,
        "workers": c.workers,
        "steps": s.steps,
        "threads": _threads(),
    }


# -- the command -------------------------------------------------------------------------------
def command(
    what: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Argument(
            help="prune and/or transfer (default: both); photo: ptl's photo loader vs torchvision's."
        ),
    ] = None,
    device: options.Device = None,
    model: Annotated[Optional[str], typer.Option(help="Model plugin (default conv6 / resnet18).")] = None,  # noqa: UP045
    width: Annotated[float, typer.Option(help="Model width factor.")] = 1.0,
    dataset: Annotated[str, typer.Option(help="Dataset plugin (its train split).")] = "fashion-pack",
    batch_size: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--batch-size",
            "-b",
            help="Batch (labeled B for transfer). Default: prune 128, transfer 64; on a CPU 32 and 8.",
        ),
    ] = None,
    mu: Annotated[int, typer.Option(help="Transfer: unlabeled batch = μ·B.")] = 7,
    k_per: Annotated[int, typer.Option("--k-per", help="Prune: IteRand re-draw interval.")] = 300,
    precision: Annotated[str, typer.Option(help="fp32 | bf16-mixed | fp16-mixed (GPU only).")] = "fp32",
    channels_last: Annotated[bool, typer.Option("--channels-last", help="channels_last (CUDA).")] = False,
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    workers: Annotated[int, typer.Option(help="Data-loader worker processes (prune).")] = 0,
    steps: Annotated[int, typer.Option(help="Timed steps per measurement (×3 repeats).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 2,
    threads: Annotated[int, typer.Option(help="CPU threads for torch (0: torch's default).")] = 0,
    data_dir: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--data-dir", help="photo: an image folder DIR/<class>/<image> (default: generated)."),
    ] = None,
    photos: Annotated[int, typer.Option(help="photo: generated 500×375 JPEGs without --data-dir.")] = 256,
    image_size: Annotated[int, typer.Option("--image-size", help="photo: crop side.")] = 224,
    reps: Annotated[int, typer.Option(help="photo: interleaved passes over the folder per loader.")] = 5,
    as_json: options.Json = False,
) -> None:
    """Images/s of prune and transfer training steps on this device, and whether loading keeps up."""
    chosen = what or list(DEFAULT_WHATS)
    unknown = [w for w in chosen if w not in WHATS]
    if unknown:
        raise UserError(f"ptl bench: unknown {unknown[0]!r}; choose from {', '.join(WHATS)}")
    if precision not in ("fp32", "bf16-mixed", "fp16-mixed"):
        raise UserError(f"--precision {precision!r}: use fp32, bf16-mixed or fp16-mixed")
    if steps < 1 or (batch_size is not None and batch_size < 2):
        raise UserError("--steps must be >= 1 and --batch-size >= 2")
    if threads > 0:
        import torch

        torch.set_num_threads(threads)
    s = _setup(device or "auto", precision, channels_last, compile_, workers, steps, warmup)
    # GPU-sized batches by default; a CPU gets small ones so that a bare `ptl bench` takes minutes
    cpu = s.device.type == "cpu"
    reports = []
    if "prune" in chosen:
        batch = batch_size or (32 if cpu else 128)
        reports.append(bench_prune(s, model or "conv6", width, dataset, batch, k_per))
    if "transfer" in chosen:
        batch = batch_size or (8 if cpu else 64)
        reports.append(bench_transfer(s, model or "resnet18", width, dataset, batch, mu, 4096))
    if "photo" in chosen:
        from ptl_cli.bench_photo import bench_photo

        echo = (lambda _: None) if as_json else typer.echo
        flags = {"workers": workers, "threads": _threads()}
        batch = batch_size or 32
        reports.append(bench_photo(data_dir, photos, batch, workers, image_size, reps, flags, echo))
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
        return
    _print(reports)


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
