"""``ptl bench transfer``: how fast the transfer workflow's SSL steps run on this device, to size a run.

Registered through ``ptl_register_benchmarks`` (``ptl_transfer.hooks``), as a third-party plugin
would register its own. In one process it times, with the ``[compute]`` fast paths asked for:

* the **loader**: random gathers from the labeled set and from a pseudo-sample pool (a uint8
  stand-in, gathered as ``PoolData.gather`` does from memory), brought to the device by the
  prefetching loader, as ``ptl transfer`` fetches them;
* the **unlabeled views** of FixMatch (weak + strong, RandAugment and Cutout);
* the **supervised** and **FixMatch steps**, each :class:`ptl_cli.engine.ssl_step.SSLStep` — the
  step ``ptl transfer`` runs — on B labeled images (+ μB pool samples);

and the ratios that matter: loader/step throughput (>= 1: loading is not the bottleneck),
FixMatch vs supervised step, the unlabeled views' share of a FixMatch step. ``--ssl NAMES`` (or
``all``) adds each named algorithm's step, with its heads, memory banks and indices as
``ptl transfer`` gives them, and its step time relative to FixMatch's, timed again just before
it in the same process (interleaved: a shared machine's speed drifts by 20 % over a few
minutes, which would bias whichever algorithm is timed last): what choosing another algorithm
costs per step. The benchmark's labeled set is the labeled batch
and its unlabeled set the unlabeled batch, so per-sample state and memory banks are full from
the first step, and steps are numbered from the middle of a long stage, past every warm-up: the
steady state, not a run's first epoch.
Importing this module stays cheap (no torch): ``ptl bench --help`` reads its options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from ptl_cli.bench import Bench, Report, Row

#: Items of the pseudo-sample pool stand-in.
POOL_SIZE = 4096
#: The stage length the timed SSL steps believe in; they are numbered from its middle, so that
#: warm-ups and ramp-ups (Dash's supervised warm-up skips the unlabeled batch) are behind them.
HORIZON = 10**6


def bench_transfer(
    bench: Bench,
    *,
    mu: Annotated[int, typer.Option(help="Transfer: unlabeled batch = μ·B.")] = 7,
    strong_ops: Annotated[
        int, typer.Option(min=0, help="Transfer: RandAugment ops per strong view (ssl.strong_ops).")
    ] = 2,
    ssl: Annotated[
        str,
        typer.Option(
            help="Transfer: also time these SSL algorithms' steps, each relative to FixMatch's "
            "(comma-separated names from `ptl list ssl`, or 'all')."
        ),
    ] = "",
) -> Report:
    """Loader, strong augmentation, supervised step and FixMatch step (labeled B + μB pool samples)."""
    import torch

    from ptl_cli import plugins
    from ptl_cli.data.loader import step_batches
    from ptl_cli.data.views import make_views
    from ptl_cli.engine.compute import prepare_model
    from ptl_cli.engine.heads import attach
    from ptl_cli.engine.ssl_step import SSLStep

    extra_algorithms = _algorithm_names(ssl)
    model_name, batch_size = bench.model or "resnet18", bench.batch(64, 8)
    data = bench.load_dataset()
    info = data.info
    images = data.images if hasattr(data, "images") else torch.stack([data[i][0] for i in range(len(data))])
    labels = data.targets
    reps = -(-POOL_SIZE // images.shape[0])
    pool = images.repeat(reps, 1, 1, 1)[:POOL_SIZE].contiguous()
    config = {"model": model_name, "width": bench.width, "dataset": bench.dataset, "batch_size": batch_size}
    report = Report(
        "transfer",
        str(bench.device),
        {**config, "mu": mu, "strong_ops": strong_ops, "pool_size": POOL_SIZE, **bench.flags()},
    )

    def fetch_step(step: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(step)
        lab = torch.randint(0, images.shape[0], (batch_size,), generator=gen)
        unl = torch.randint(0, pool.shape[0], (mu * batch_size,), generator=gen)
        return {"x": images[lab], "y": labels[lab], "u": pool[unl]}

    per_step = batch_size * (1 + mu)
    row, batch = bench.measure_loader(step_batches(fetch_step, 0, 10**9), per_step)
    report.rows.append(row)

    def views(batch_images: Any, names: tuple[str, ...]) -> dict[str, Any]:
        return make_views(batch_images, names, info.mean, info.std, n_ops=strong_ops)

    seconds_aug = bench.time(lambda: views(batch["u"], ("weak", "strong")))
    report.rows.append(Row("unlabeled views", mu * batch_size, seconds_aug, "weak + strong (RandAugment)"))

    def ssl_step(name: str) -> tuple[Any, Callable[[], Any]]:
        """Algorithm ``name`` and its step on the loaded batch, as ``ptl transfer`` runs it: its
        heads attached, its set sizes and sample indices given (the batches are the sets)."""
        n_labeled, n_unlabeled = batch["x"].shape[0], batch["u"].shape[0]
        sizes = {"num_labeled": n_labeled, "num_unlabeled": n_unlabeled}
        algo = plugins.get("ssl", name).build(info.num_classes, where=f"--ssl {name}", optional=sizes)
        net = attach(algo, bench.build_model(model_name, info), seed=0)
        model, train_model = prepare_model(net, bench.compute, bench.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True)
        step = SSLStep(algo, model, optimizer, views, HORIZON, bench.precision, train_model=train_model)
        indices = {
            "unlabeled_index": torch.arange(n_unlabeled, device=bench.device),
            "labeled_index": torch.arange(n_labeled, device=bench.device),
        }
        count = iter(range(HORIZON // 2, HORIZON))  # mid-stage: past every warm-up (Dash's 2048 steps)
        return algo, lambda: step(next(count), batch["x"], batch["y"], batch["u"], **indices)

    sup = bench.time(ssl_step("supervised")[1])
    report.rows.append(Row("supervised step", batch_size, sup, "B labeled images"))
    fixmatch_step = ssl_step("fixmatch")[1]
    fix = bench.time(fixmatch_step)
    report.rows.append(Row("fixmatch step", batch_size * (1 + 2 * mu), fix, "B + 2μB images"))
    report.ratios = {
        "loader_vs_step_throughput": report.rows[0].images_per_second / (per_step / fix),
        "fixmatch_vs_supervised_step_time": fix / sup,
        "unlabeled_views_share_of_step": seconds_aug / fix,
    }
    for name in extra_algorithms:
        algo, run_step = ssl_step(name)
        beside = bench.time(fixmatch_step)  # FixMatch again, just before: the machine drifts
        seconds = bench.time(run_step)
        images = batch_size * (len(algo.labeled_views) + mu * len(algo.unlabeled_views))
        report.rows.append(Row(f"{name} step", images, seconds, "its views of B + μB images"))
        report.ratios[f"{name}_vs_fixmatch_step_time"] = seconds / beside
    return report


def _algorithm_names(value: str) -> list[str]:
    """``--ssl``'s names (``all``: every registered algorithm but FixMatch and supervised, which
    are always timed), each checked against the registry before anything is timed. A name may
    come again, ``fixmatch`` too: its ratio to the FixMatch timing beside it is the resolution of
    the others."""
    from ptl_cli import plugins

    registry = plugins.manager().registry("ssl")
    known = [name for name in registry.names() if name not in ("fixmatch", "supervised")]
    if value.strip() == "all":
        return known
    names = [name.strip() for name in value.split(",") if name.strip()]
    for name in names:
        plugins.get("ssl", name)  # an unknown name: one line with the known ones, exit 2
    return names
