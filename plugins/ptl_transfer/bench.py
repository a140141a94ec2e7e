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
FixMatch vs supervised step, the unlabeled views' share of a FixMatch step.
Importing this module stays cheap (no torch): ``ptl bench --help`` reads its options.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from ptl_cli.bench import Bench, Report, Row

#: Items of the pseudo-sample pool stand-in.
POOL_SIZE = 4096


def bench_transfer(
    bench: Bench,
    *,
    mu: Annotated[int, typer.Option(help="Transfer: unlabeled batch = μ·B.")] = 7,
    strong_ops: Annotated[
        int, typer.Option(min=0, help="Transfer: RandAugment ops per strong view (ssl.strong_ops).")
    ] = 2,
) -> Report:
    """Loader, strong augmentation, supervised step and FixMatch step (labeled B + μB pool samples)."""
    import torch

    from ptl_cli import plugins
    from ptl_cli.data.loader import step_batches
    from ptl_cli.data.views import make_views
    from ptl_cli.engine.compute import prepare_model
    from ptl_cli.engine.ssl_step import SSLStep

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

    def ssl_step(name: str) -> Callable[[], Any]:
        """One ``ptl transfer`` SSL step of algorithm ``name`` on the loaded batch."""
        algo = plugins.get("ssl", name).build(info.num_classes)
        model, train_model = prepare_model(bench.build_model(model_name, info), bench.compute, bench.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, nesterov=True)
        step = SSLStep(algo, model, optimizer, views, 1, bench.precision, train_model=train_model)
        return lambda: step(0, batch["x"], batch["y"], batch["u"])

    sup = bench.time(ssl_step("supervised"))
    report.rows.append(Row("supervised step", batch_size, sup, "B labeled images"))
    fix = bench.time(ssl_step("fixmatch"))
    report.rows.append(Row("fixmatch step", batch_size * (1 + 2 * mu), fix, "B + 2μB images"))
    report.ratios = {
        "loader_vs_step_throughput": report.rows[0].images_per_second / (per_step / fix),
        "fixmatch_vs_supervised_step_time": fix / sup,
        "unlabeled_views_share_of_step": seconds_aug / fix,
    }
    return report
