"""The ``prune`` workflow: one training loop for edge-popup, IteRand and dense SGD, top to bottom.

data (held-out validation) -> model plugin -> ``pruner.prepare`` -> SGD with momentum on what the
pruner trains -> per-epoch learning rate -> steps (augment, then :func:`ptl_cli.pruning.train_step`:
forward, backward, ``after_step``; the benchmark and ``check_pruner`` run the same step) ->
validation each epoch -> test at the end. Checkpoints (every ``checkpoint_every`` steps, at epoch
ends, and on SIGINT/SIGTERM) hold the model, optimizer, pruner state, position in the epoch and
every RNG state, so ``ptl resume`` ends bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ptl_prune.recipe import PruneRecipe


def weight_counts(pruner: Any, model: Any) -> tuple[int, int]:
    """(kept, total) Conv/Linear weights: the pruner's own count when it has one (the built-ins
    do), else derived from ``sparsity()``, the only count the core Pruner protocol promises."""
    if hasattr(pruner, "counts"):
        return pruner.counts(model)
    from ptl_prune.supermask import original, prunable_layers

    total = sum(original(m).numel() for _, m in prunable_layers(model))
    return total - round(float(pruner.sparsity(model)) * total), total


def layer_sparsity(pruner: Any, model: Any) -> dict[str, float]:
    """Fraction pruned of each Conv/Linear layer: the pruner's ``sparsity_by_layer`` when it has
    one (the built-ins do), else the exact zeros of each layer's weight in ``export_dense``."""
    if hasattr(pruner, "sparsity_by_layer"):
        return {str(k): float(v) for k, v in pruner.sparsity_by_layer(model).items()}
    import torch

    from ptl_prune.supermask import prunable_layers

    dense = pruner.export_dense(model)
    out = {}
    for name, _ in prunable_layers(model):
        weight = dense.get(f"{name}.weight" if name else "weight")
        if weight is not None and weight.numel():
            out[name] = (weight.numel() - int(torch.count_nonzero(weight))) / weight.numel()
    return out


def add_step_metrics(sums: Any, loss: Any, logits: Any, targets: Any) -> None:
    """Add a step's loss·n, correct count and n to ``sums`` (float64, on the step's device).

    On the device, not the host: reading them every step would make the host wait for the GPU;
    they are read once per log record instead.
    """
    import torch

    with torch.no_grad():
        n = targets.numel()
        sums[0] += loss.detach().double() * n
        sums[1] += (logits.argmax(1) == targets).sum()
        sums[2] += n


class PruneWorkflow:
    """The ``prune`` run kind (:class:`ptl_cli.contracts.Workflow`)."""

    # -- --dry-run ---------------------------------------------------------------------------
    def plan(self, recipe: PruneRecipe) -> list[tuple[str, str]]:
        """What the recipe will do, resolved without loading data (and, unless its checks need the
        network's layers, without importing torch; see :mod:`ptl_prune.preflight`)."""
        from ptl_prune import preflight

        preflight.check(recipe)
        t, a, d = recipe.train, recipe.augment, recipe.data
        params = ", ".join(f"{k}={v}" for k, v in recipe.pruner_params.items())
        crop = {"random-resized": f"random-resized crop {tuple(a.crop_scale)}", "random": "random crop"}
        steps = [f"pad {a.pad}"] if a.pad and a.crop != "none" else []
        steps += [crop[a.crop]] if a.crop in crop else []
        steps += ["flip"] if a.flip else []
        schedule = t.schedule
        if t.warmup_epochs or t.tail_epochs:
            main = t.epochs - t.warmup_epochs - t.tail_epochs
            schedule = f"{t.warmup_epochs} warm-up + {main} {schedule} + {t.tail_epochs} at {t.tail_lr:g}"
        limits = ([f"train ≤ {d.train_limit}"] if d.train_limit else []) + (
            [f"test ≤ {d.test_limit}"] if d.test_limit else []
        )
        tune = recipe.pruner_params.get("finetune_epochs") or 0
        if tune:  # Gem-Miner's fine-tuning: the schedule spans the search, then the pruner's own
            p = recipe.pruner_params
            schedule += (
                f" over {t.epochs - tune} search epochs, then {tune} fine-tuning epochs at lr "
                f"{p['finetune_lr']:g} (×0.1 after 8/15 and 12/15), "
                f"weight decay {p['finetune_weight_decay']:g}"
            )
        return [
            ("method", f"{recipe.method} ({params})" if params else recipe.method),
            ("model", f"{recipe.model.name} (width {recipe.model.width:g})"),
            (
                "data",
                f"{d.dataset} ({d.val_fraction:.0%} of train held out for validation"
                + (f"; {', '.join(limits)}" if limits else "")
                + ")",
            ),
            ("augmentation", " + ".join(steps) or "none"),
            ("epochs", str(t.epochs)),
            ("batch size", str(t.batch_size)),
            (
                "optimizer",
                f"SGD lr {t.lr:g}, momentum {t.momentum:g}{' (Nesterov)' if t.nesterov else ''}, "
                f"weight decay {t.weight_decay:g}",
            ),
            ("lr schedule", f"{schedule} (per epoch)"),
            (
                "checkpoints",
                f"every {t.checkpoint_every} steps and each epoch" if t.checkpoint_every else "each epoch",
            ),
            ("device", f"{recipe.compute.device} ({recipe.compute.precision})"),
            ("seed", str(recipe.seed)),
        ]

    # -- the run ------------------------------------------------------------------------------
    def run(self, ctx: Any) -> dict[str, Any]:
        import torch

        from ptl_cli import atomic, pruning
        from ptl_cli.data import augment
        from ptl_cli.data.loader import Prefetcher
        from ptl_cli.data.sampler import ResumableSampler
        from ptl_cli.engine import distributed
        from ptl_cli.engine.compute import optimizer_options, prepare_model
        from ptl_cli.engine.interrupt import Interrupted
        from ptl_cli.engine.seeding import capture_rng, restore_rng
        from ptl_cli.engine.sync import host_sync
        from ptl_cli.errors import UserError
        from ptl_prune import data as prune_data
        from ptl_prune.build import arch_of, build_model, build_pruner
        from ptl_prune.schedule import lr_at

        r: PruneRecipe = ctx.recipe
        device, dist, t = ctx.device, ctx.dist, r.train

        # data and model
        data = prune_data.load(r.data)
        arch = arch_of(r.model, data.info)
        pruner = build_pruner(r.pruner.model_dump())
        # on the device; DDP (floating-point buffers broadcast, IteRand's int16 `sources` kept
        # by each rank), channels_last and torch.compile as [compute] asks
        prepared = pruning.prepare(pruner, build_model(arch), r.seed)  # with its before_forward hook
        model, train_model = prepare_model(prepared, r.compute, device, dist)
        trainable = list(pruner.trainable_parameters(model))
        if not trainable:  # e.g. sparsity 0 everywhere: no layer gets scores, nothing could learn
            from ptl_prune.preflight import nothing_to_train

            raise UserError(nothing_to_train(r.method, r.model.name))
        optimizer = torch.optim.SGD(
            trainable,
            lr=t.lr,
            momentum=t.momentum,
            weight_decay=t.weight_decay,
            nesterov=t.nesterov,
            **optimizer_options(device),  # fused on CUDA: no host sync under fp16 loss scaling
        )

        # batches: a resumable permutation per epoch, this rank's share of the global batch
        from ptl_prune.preflight import split_batch

        per_rank = split_batch(t.batch_size, dist.world_size)
        # photos are random-resized-cropped in the loader, per image, keyed by (epoch, index)
        train_set = prune_data.crop_in_loader(data.train, r.augment, r.seed)
        cropped = train_set is not data.train
        sampler = ResumableSampler(
            len(train_set), r.seed, rank=dist.rank, world_size=dist.world_size, keyed=cropped
        )
        share = len(sampler)
        drop_last = share % per_rank == 1  # a batch of one breaks BatchNorm in training mode
        steps_per_epoch = share // per_rank if drop_last else math.ceil(share / per_rank)
        if steps_per_epoch == 0:
            raise UserError(f"{share} training images make no batch of {per_rank}; lower train.batch_size")
        loader = prune_data.loader(train_set, per_rank, sampler, r.compute.workers, drop_last)
        if hasattr(pruner, "configure"):
            from ptl_cli.contracts import optional_arguments

            # schedules in epochs: the steps per epoch, and the epochs when the pruner asks (Gem-Miner)
            pruner.configure(
                steps_per_epoch,
                **optional_arguments("pruners", "configure", pruner.configure, {"epochs": t.epochs}),
            )

        # resume
        step = epoch = batch = 0
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss·n, correct, n this epoch
        elapsed, best_val, val_acc = 0.0, None, None
        state = ctx.load_checkpoint()
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            pruner.load_state_dict(state["pruner"])
            ctx.precision.load_state_dict(state["precision"])
            step, epoch, batch = state["step"], state["epoch"], state["batch"]
            sums = distributed.take_row(dist, state["sums"]).to(device)  # this rank's partial epoch
            elapsed, best_val, val_acc = state["elapsed"], state["best_val"], state["val_acc"]
            restore_rng(state["rng"])
            ctx.say(f"continuing from step {step} (epoch {epoch + 1}, batch {batch})")
        if ctx.resuming and dist.is_main:
            ctx.run.truncate_metrics(lambda rec: rec.get("step", 0) <= step)

        def save() -> None:
            with host_sync("checkpoint"):
                _save()

        def _save() -> None:
            ctx.check_finite(sums[0], f"step {step}")  # never checkpoint a diverged model
            ctx.verify_in_sync(model, f"step {step}")  # ranks hold the same network (and BN stats)
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "pruner": pruner.state_dict(),
                "precision": ctx.precision.state_dict(),
                "rng": capture_rng(),
                "step": step,
                "epoch": epoch,
                "batch": batch,
                "sums": distributed.gather_rows(dist, sums),  # every rank's partial-epoch sums
                "elapsed": elapsed + time.time() - started,
                "best_val": best_val,
                "val_acc": val_acc,
            }
            ctx.save_checkpoint(state, step)

        def log_train() -> None:
            with host_sync("log record"):  # the running sums stay on the device between records
                loss, correct, seen = distributed.all_reduce_sum(dist, sums.clone()).tolist()  # global batch
            ctx.check_finite(loss, f"step {step}")
            ctx.log(step=step, epoch=epoch + 1, stage="train", loss=loss / seen, acc=correct / seen, lr=lr)

        # the epochs the recipe's schedule spans: all, unless the pruner has a phase of its own after
        horizon = pruner.search_epochs(t.epochs) if hasattr(pruner, "search_epochs") else t.epochs
        started = time.time()
        with ctx.progress.task("training", total=t.epochs * steps_per_epoch, completed=step) as advance:
            while epoch < t.epochs:
                lr = lr_at(epoch, horizon, t.lr, t.schedule, t.warmup_epochs, t.tail_epochs, t.tail_lr)
                # a pruner with a phase of its own (Gem-Miner's fine-tuning) sets that phase's optimizer
                settings = pruner.epoch_settings(epoch) if hasattr(pruner, "epoch_settings") else None
                lr = settings["lr"] if settings else lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
                    group.update(settings or {})
                sampler.set_epoch(epoch, start=batch * per_rank)
                train_model.train()
                with Prefetcher(loader, device) as batches:  # fetches the next batches during a step
                    for images, targets in batches:
                        with augment.batch_shard(dist.rank, dist.world_size):  # as one process would
                            x = prune_data.train_views(images, r.augment, data.info, cropped)
                        if r.compute.channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        loss, logits = pruning.train_step(
                            pruner,
                            model,
                            optimizer,
                            x,
                            targets,
                            step + 1,
                            precision=ctx.precision,
                            forward=train_model,
                        )
                        step += 1
                        batch += 1
                        add_step_metrics(sums, loss, logits, targets)
                        advance(1)
                        if step % t.log_every == 0:
                            log_train()
                        stop = ctx.should_stop() or step == t.stop_after_steps
                        if stop or (t.checkpoint_every and step % t.checkpoint_every == 0):
                            save()
                        if stop:
                            raise Interrupted()
                # end of an epoch: train metrics, validation, checkpoint
                log_train()
                epoch += 1
                batch = 0
                sums.zero_()
                if data.val is not None:
                    val_acc = self.evaluate(model, data.val, data.info, ctx, r.data.eval_batch_size)
                    best_val = val_acc if best_val is None else max(best_val, val_acc)
                    ctx.log(step=step, epoch=epoch, stage="val", val_acc=val_acc)
                save()

        test_acc = self.evaluate(model, data.test, data.info, ctx, r.data.eval_batch_size)
        with host_sync("final metrics"):
            kept, total = weight_counts(pruner, model)
            sparsity, by_layer = float(pruner.sparsity(model)), layer_sparsity(pruner, model)
        elapsed += time.time() - started
        metrics = {
            "test_acc": test_acc,
            "val_acc": val_acc,
            "best_val_acc": best_val,
            "sparsity": sparsity,
            "params_kept": kept,
            "params_total": total,
            "layer_sparsity": by_layer,
            "time_s": round(elapsed, 2),
            "steps": step,
            "epochs": t.epochs,
            "method": r.method,
            "model": r.model.name,
            "width": r.model.width,
            "dataset": r.data.dataset,
        }
        ctx.log(step=step, epoch=epoch, stage="test", test_acc=test_acc, sparsity=metrics["sparsity"])
        if dist.is_main:
            final = {
                "model": model.state_dict(),
                "pruner": pruner.state_dict(),
                "seed": r.seed,
                "arch": arch,
                "recipe": r.pruner.model_dump(),
            }
            with host_sync("final model"):
                atomic.torch_save(final, ctx.run.path / "final.pt")
        return metrics

    @staticmethod
    def evaluate(model: Any, dataset: Any, info: Any, ctx: Any, batch_size: int) -> float:
        """Top-1 accuracy as a fraction; masks are computed once for the whole pass."""
        import torch
        from torch.nn.utils import parametrize

        from ptl_cli.data.loader import Prefetcher
        from ptl_cli.engine import distributed
        from ptl_cli.engine.sync import host_sync
        from ptl_prune.data import eval_batches, eval_views

        distributed.sync_buffers(ctx.dist, model)  # every rank evaluates rank 0's BatchNorm statistics
        model.eval()
        counts = torch.zeros(2, dtype=torch.float64, device=ctx.device)
        with torch.no_grad(), parametrize.cached(), ctx.precision.autocast():
            shares = eval_batches(
                dataset, batch_size, ctx.dist.rank, ctx.dist.world_size, ctx.recipe.compute.workers
            )
            with Prefetcher(shares, ctx.device) as batches:  # pinned, copied ahead: no blocking copy
                for images, targets in batches:
                    logits = model(eval_views(images, info))
                    counts[0] += (logits.argmax(1) == targets).sum()
                    counts[1] += targets.numel()
        with host_sync("evaluation result"):
            distributed.all_reduce_sum(ctx.dist, counts)
            correct, seen = counts.tolist()
        return correct / seen if seen else 0.0

    # -- reports and exports ------------------------------------------------------------------
    def results_table(self, run: Any) -> tuple[list[str], list[list[Any]]]:
        """One row per quantity: a two-column table stays readable in any terminal width."""
        m = run.info().get("metrics", {})
        kept, total = m.get("params_kept"), m.get("params_total")
        rows = [
            ["method", m.get("method", "?")],
            ["model", f"{m.get('model', '?')} (width {m.get('width', 1.0):g})"],
            ["dataset", m.get("dataset", "?")],
            ["test accuracy", m.get("test_acc")],
            ["best val accuracy", m.get("best_val_acc") if m.get("best_val_acc") is not None else "-"],
            ["sparsity", m.get("sparsity")],
            ["params kept", f"{kept:,} of {total:,}" if kept is not None and total is not None else "-"],
            ["time (s)", f"{m['time_s']:.0f}" if m.get("time_s") is not None else "-"],
        ]
        rows += [
            [f"sparsity of {name or '(model)'}", value] for name, value in m.get("layer_sparsity", {}).items()
        ]
        return ["result", "value"], rows

    def export(self, run: Any, fmt: str, out: str | None, verify: bool) -> list[str]:
        from ptl_prune.export import export_run

        return export_run(run, fmt, out, verify)
