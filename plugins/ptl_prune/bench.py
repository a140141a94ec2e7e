"""``ptl bench prune``: how fast the prune workflow's steps run on this device, to size a run.

Registered through ``ptl_register_benchmarks`` (``ptl_prune.hooks``), as a third-party plugin
would register its own. In one process it times, with the ``[compute]`` fast paths asked for:

* the **loader**: uint8 batches from a resumable sampler over the dataset, brought to the device
  by the prefetching loader, as ``ptl prune`` fetches them;
* the **augmentation** of the default ``[augment]`` section (pad 4, random-resized crop, flip);
* the **dense step** (the ``sgd`` pruner) and the **supermask step** (``iterand``, scores
  trained), each :func:`ptl_cli.pruning.train_step` — the step ``ptl prune`` runs — on freshly
  augmented batches, and IteRand's **re-draw**, amortized over ``K_per`` steps;

and the ratios that matter: loader/step throughput (>= 1: loading is not the bottleneck),
supermask vs dense step, the re-draw's overhead at ``K_per``, augmentation's share of a step.
Importing this module stays cheap (no torch): ``ptl bench --help`` reads its options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer

from ptl_cli.bench import Bench, Report, Row


def bench_prune(
    bench: Bench,
    *,
    k_per: Annotated[int, typer.Option("--k-per", help="Prune: IteRand re-draw interval.")] = 300,
) -> Report:
    """Loader, augmentation, dense step, supermask step and IteRand re-draw for one model."""
    import torch

    from ptl_cli import plugins, pruning
    from ptl_cli.data.sampler import ResumableSampler
    from ptl_cli.engine.compute import prepare_model, to_device
    from ptl_prune import data as prune_data
    from ptl_prune.data import train_views
    from ptl_prune.recipe import AugmentSection

    model_name, batch_size = bench.model or "conv6", bench.batch(128, 32)
    data = bench.load_dataset()
    info = data.info
    report = Report(
        "prune",
        str(bench.device),
        {
            "model": model_name,
            "width": bench.width,
            "dataset": bench.dataset,
            "batch_size": batch_size,
            **bench.flags(),
        },
    )

    def batches() -> Iterator[Any]:
        sampler = ResumableSampler(len(data), seed=0)
        loader = prune_data.loader(data, batch_size, sampler, bench.compute.workers, drop_last=True)
        for epoch in range(10**9):
            sampler.set_epoch(epoch)
            yield from loader

    row, (images, targets) = bench.measure_loader(batches(), batch_size)
    report.rows.append(row)

    augment = AugmentSection()  # the recipe's default: pad 4, random-resized crop, flip

    def views() -> Any:
        return train_views(images, augment, info)

    seconds_aug = bench.time(views)
    report.rows.append(Row("augmentation", batch_size, seconds_aug, "pad, resized crop, flip"))

    def training(method: str, params: dict[str, Any], skip: int = 0) -> tuple[Any, Any, Callable[[], None]]:
        """The pruner, its prepared model and one ``ptl prune`` step on a fresh view of the batch.
        The step count skips multiples of ``skip`` > 1, so IteRand's re-draw, timed on its own, is
        not in the step time (with ``--k-per 1`` every step re-draws, and is timed so)."""
        pruner = plugins.get("pruners", method).build(params=params)
        model, forward = prepare_model(
            pruning.prepare(pruner, bench.build_model(model_name, info), 0), bench.compute, bench.device
        )
        optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=0.01, momentum=0.9)
        done = [0]

        def step() -> None:
            done[0] += 1
            if skip > 1 and done[0] % skip == 0:
                done[0] += 1
            x = to_device(views(), bench.device, bench.compute.channels_last)
            pruning.train_step(
                pruner, model, optimizer, x, targets, done[0], precision=bench.precision, forward=forward
            )

        return pruner, model, step

    _, _, dense_step = training("sgd", {})
    step_dense = bench.time(dense_step)
    report.rows.append(Row("dense step", batch_size, step_dense, "augment + fwd + bwd + SGD"))

    pruner, masked, masked_step = training("iterand", {"rerand_freq": k_per}, skip=k_per)
    step_mask = bench.time(masked_step)
    report.rows.append(Row("supermask step", batch_size, step_mask, "scores trained"))

    counter = iter(range(1, 10**9))
    redraw = bench.time(lambda: pruner.after_step(masked, k_per * next(counter)), max(1, bench.steps // 4), 1)
    report.rows.append(Row("iterand re-draw", 0, redraw, f"every K_per={k_per} steps"))

    loader_ips = report.rows[0].images_per_second
    report.ratios = {
        "loader_vs_step_throughput": loader_ips / (batch_size / step_mask),
        "supermask_vs_dense_step_time": step_mask / step_dense,
        "redraw_overhead_at_k_per": redraw / (k_per * step_mask),
        "augmentation_share_of_step": seconds_aug / step_mask,
    }
    return report
