"""The ``transfer`` workflow's run: scratch, KD, PP, P-SSL and PP+P-SSL in one run directory.

:func:`run` executes the recipe's phases (see :mod:`ptl_transfer.stages`) in order, skipping the
finished ones. A pool phase (``pp-pool``, ``pcs-pool``) generates its pool shard by shard
(:func:`build_pool`). A training phase sets up its network, optimizer and data, then hands one
small step function to :func:`train`, the one loop, which owns resume, checkpoints, interrupts
and the logging and evaluation cadence:

* :func:`train_target` -- the SSL step (:class:`ptl_cli.engine.ssl_step.SSLStep`; ``supervised``
  for scratch and PP fine-tuning, the recipe's algorithm for P-SSL), labeled target batches of B
  plus μB PCS pseudo samples;
* :func:`train_kd` -- supervised loss plus distillation into an auxiliary ``K_s``-way head;
* :func:`train_pp` -- pseudo pre-training on generated, source-labeled samples.

The running phase's state (model, EMA, optimizer, scheduler, SSL state, seconds) is one
:class:`ptl_transfer.running.Running` object; a checkpoint holds the finished phases' results
and that state with the RNG, so resume skips finished phases and continues the running one
exactly. Every phase starts from RNG seeded by ``(seed, phase salt)``, so a stage's result does
not depend on which other stages ran before it. What every phase shares (recipe, target data,
source models, pools, data-parallel helpers) is the :class:`ptl_transfer.job.Job`.

Under ``torchrun`` every rank runs the same loops on its strided share of each global batch
(augmentation draws the global batch's numbers and keeps the share), DDP averages gradients,
logged metrics are global means, evaluation and pool generation are dealt out to the ranks, and
every checkpoint and stage end checks that the ranks hold bit-identical weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ptl_cli import plugins
from ptl_cli.data.base import normalize, to_float
from ptl_cli.data.views import make_views, weak_view
from ptl_cli.engine import heads
from ptl_cli.engine.compute import prepare_model
from ptl_cli.engine.interrupt import Interrupted
from ptl_cli.engine.seeding import generator_for
from ptl_cli.engine.ssl_step import SSLStep
from ptl_cli.engine.sync import host_sync
from ptl_transfer import evaluate, nets, pcs, results, stages
from ptl_transfer.job import KD_HEAD, LABELED_ORDER, POOL_ORDER, SSL_HEADS, Job
from ptl_transfer.kd import kd_loss
from ptl_transfer.pool import make_shards
from ptl_transfer.running import Running, checkpoint, resume
from ptl_transfer.sampling import StepStream
from ptl_transfer.stages import Phase

#: ``step(i, batch) -> (loss, logs)``: one optimizer step of a phase on the batch of step ``i``.
Step = Callable[[int, Any], tuple[torch.Tensor, dict[str, Any]]]


# -- the run ------------------------------------------------------------------------------------
def run(ctx: Any) -> dict[str, Any]:
    """Every phase of the recipe in order, skipping finished ones; returns the final metrics.

    On a CPU with threads to spare the stages run side by side in child runs instead
    (:mod:`ptl_transfer.lanes`), each of which comes back here with its share of the stages.
    """
    from ptl_transfer import lanes

    side_by_side = lanes.planned(ctx)
    if side_by_side is not None:
        return lanes.run(ctx, *side_by_side)
    job = Job(ctx)
    current, state = resume(job)
    ctx.progress.plan({p.name: p.steps for p in stages.phases(ctx.recipe) if p.name not in job.done})
    for phase in stages.phases(ctx.recipe):
        if phase.name in job.done:
            continue
        job.done[phase.name] = RUNNERS[phase.name](job, phase, state if current == phase.name else None)
        checkpoint(job, phase, phase.steps, None)
    return results.final_metrics(job)


# -- the one loop -------------------------------------------------------------------------------
def train(
    job: Job,
    phase: Phase,
    state: dict[str, Any] | None,
    running: Running,
    opt: Any,
    fetch: Callable[[int], Any],
    step: Step,
    epoch_size: int,
    ahead: bool = True,
    before_lr: tuple[str, ...] = (),
) -> dict[str, float]:
    """Run ``step`` from where ``state`` stopped to ``opt.steps`` on the batches ``fetch(i)`` gives.

    Every ``opt.log_every`` steps (and at the end) a metrics record of the global batch's loss
    and logs (``epoch`` counts passes over ``epoch_size`` items; logs named in ``before_lr`` are
    written before ``lr``, the rest after it); every ``opt.checkpoint_every`` steps a checkpoint;
    with an EMA, every ``opt.eval_every`` steps its test accuracy. On a stop request the state is
    checkpointed and :class:`Interrupted` raised. Returns the last record's values.
    """
    ctx = job.ctx
    start = running.restore(job, phase, state)
    running.began = time.perf_counter()
    last: dict[str, float] = {}
    running.model.train()
    with (
        ctx.progress.task(phase.name, total=opt.steps, completed=start) as advance,
        job.batches(fetch, start, opt.steps, ahead) as batches,
    ):
        for i, batch in zip(range(start, opt.steps), batches, strict=True):
            if ctx.should_stop():
                running.save(job, phase, i)
                raise Interrupted
            loss, logs = step(i, batch)
            done = i + 1
            if done % opt.log_every == 0 or done == opt.steps:
                with host_sync("log record"):  # the step's values are read here, not in the step
                    last = ctx.global_mean(loss=loss, **logs)  # the global batch's (a collective)
                ctx.check_finite(last["loss"], f"{phase.name} step {done}")
                values = dict(last)
                head = {k: values.pop(k) for k in ("loss", *before_lr)}
                lr = running.scheduler.get_last_lr()[0]
                epoch = done * opt.batch_size // epoch_size
                ctx.log(stage=phase.name, step=done, epoch=epoch, **head, lr=lr, **values)
                advance(opt.log_every, loss=head["loss"])
            if done % opt.checkpoint_every == 0 and done < opt.steps:
                running.save(job, phase, done)
            if running.ema is not None and opt.eval_every and done % opt.eval_every == 0 and done < opt.steps:
                acc = evaluate.target_accuracy(job, heads.plain(running.ema.model))
                ctx.log(stage=phase.name, step=done, test_acc=acc)
    return last


def _update(job: Job, running: Running, loss: torch.Tensor) -> None:
    """Backward, optimizer step (with the run's loss scaling) and scheduler step."""
    running.optimizer.zero_grad(set_to_none=True)
    job.ctx.precision.backward_and_step(loss, running.optimizer)
    running.scheduler.step()


def _finish(job: Job, phase: Phase, model: torch.nn.Module, seconds: float, unwrap=lambda m: m) -> dict:
    """Test the trained (EMA) model, save it as the stage's output, report the stage's result.

    ``unwrap`` gives the network itself (without KD's or an SSL algorithm's extra heads): it is
    what is tested and saved, so later stages and ``ptl export`` never see the heads."""
    job.in_sync(f"the end of {phase.name}", model)
    net = unwrap(model)
    acc = evaluate.target_accuracy(job, net)
    job.ctx.log(stage=phase.name, step=phase.steps, test_acc=acc)
    job.save_stage(phase.name, net.state_dict())
    job.ctx.say(f"{phase.name}: test accuracy {acc:.4f}")
    return {"test_acc": acc, "steps": phase.steps, "seconds": round(seconds, 3)}


# -- the phases -------------------------------------------------------------------------------
def build_pool(job: Job, phase: Phase, state: Any) -> dict[str, Any]:
    """Generate the PP or PCS pool shard by shard (resumes at the first missing shard)."""
    ctx = job.ctx
    kind = "pp" if phase.name == "pp-pool" else "pcs"
    pool, maker = job.pool(kind)
    started = time.perf_counter()
    missing = len(pool.missing())
    ctx.say(
        f"{phase.name}: {pool.count} samples in {pool.path} ({missing} of {pool.num_shards} shards to make)"
    )
    done = pool.num_shards - missing
    with ctx.progress.task(phase.name, total=pool.num_shards, completed=done, unit="shard") as advance:
        finished, by_rank = make_shards(pool, maker, ctx.dist, ctx.should_stop, advance)
    if not finished:
        checkpoint(job, phase, 0, None)
        raise Interrupted
    seconds = time.perf_counter() - started
    data = job.pools[kind] = pool.open(maker)
    result = {"samples": len(data), "generated_shards": missing, "seconds": round(seconds, 3)}
    ranks = {"shards_by_rank": by_rank} if ctx.dist.enabled else {}  # who made what, under torchrun
    ctx.log(stage=phase.name, step=0, pool_samples=len(data), pool_seconds=round(seconds, 3), **ranks)
    if kind == "pcs":
        result["agreement"] = evaluate.pcs_agreement(job, data)
    return result


def train_pp(job: Job, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
    """Pseudo pre-training: cross-entropy on generated samples with a K_s-way head."""
    ctx, r, t = job.ctx, job.recipe, job.target
    opt, dist = r.pp.train, ctx.dist
    local = job.local_batch(opt.batch_size, "pp.train.batch_size")
    pool = job.open_pool("pp") if r.pp.mode == "pool" else None  # before seeding: may generate
    order = StepStream(len(pool), opt.batch_size, r.seed, POOL_ORDER) if pool else None
    model, train_model = prepare_model(job.new_model("source"), r.compute, job.device, dist)
    optimizer = nets.sgd(model, opt)
    running = Running(model, train_model, optimizer, nets.cosine(optimizer, opt.steps, opt.cosine_cycles))
    mean, std = t.info.mean, t.info.std

    def fetch(step: int) -> dict[str, torch.Tensor]:
        if pool is not None:
            return pool.gather(job.share(order.indices(step)))
        # on the fly each rank generates its own share, the batch (step, rank), on the device
        index = step * dist.world_size + dist.rank
        size, channels = t.info.image_size, t.info.channels
        return pcs.pp_batch(job.sources.generator, index, local, r.pp.seed, size, channels, job.device)

    def step(i: int, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        with job.augmenting():
            x = make_views(batch["images"], ("weak",), mean, std)["weak"]
        y = batch["labels"]
        with ctx.precision.autocast():
            logits = train_model(x)
            loss = F.cross_entropy(logits, y)
        _update(job, running, loss)
        return loss, {"train_acc": (logits.detach().argmax(1) == y).float().mean()}  # this batch's

    epoch_size = len(pool) if pool else opt.batch_size
    ahead = pool is not None  # on-the-fly batches are generated in the step's thread
    last = train(job, phase, state, running, opt, fetch, step, epoch_size, ahead, before_lr=("train_acc",))
    job.in_sync(f"the end of {phase.name}", model)
    job.save_stage(phase.name, model.state_dict())
    return {
        "source_train_acc": last["train_acc"],  # the last step always logs
        "num_source_classes": job.num_source_classes,
        "steps": opt.steps,
        "seconds": round(running.elapsed(), 3),
    }


def train_target(job: Job, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
    """The SSL phases: B labeled target images (+ μB PCS pseudo samples) per step, EMA for evaluation.

    ``scratch`` and ``pp`` use the ``supervised`` algorithm (no unlabeled batch); ``pssl`` and
    ``pp+pssl`` use the recipe's algorithm over the PCS pool (or, as a control, the target's real
    unlabeled images: ``ssl.unlabeled``). ``pp`` and ``pp+pssl`` start from
    the PP body with a fresh K_t head.
    """
    ctx, r, t = job.ctx, job.recipe, job.target
    opt = r.train
    semi = phase.name in ("pssl", "pp+pssl")
    algo_name, algo_params = (r.ssl.name, r.ssl.params) if semi else ("supervised", {})
    num_unlabeled = job.unlabeled_count() if semi else 0
    algo = build_ssl(algo_name, algo_params, t.num_classes, t.images.shape[0], num_unlabeled)
    pool = job.open_unlabeled() if algo.unlabeled_views else None  # before seeding: may generate
    unlabeled = StepStream(len(pool), r.ssl.mu * opt.batch_size, r.seed, POOL_ORDER) if pool else None
    labeled = StepStream(t.images.shape[0], opt.batch_size, r.seed, LABELED_ORDER)
    job.local_batch(opt.batch_size, "train.batch_size")
    head = "pp" if phase.name.startswith("pp") else "target"
    # an algorithm's own heads (projections) are trained with the net, from the run's seed
    net = heads.attach(algo, job.new_model(head), job.seed(SSL_HEADS))
    model, train_model = prepare_model(net, r.compute, job.device, ctx.dist)
    ema = nets.EMA(model, opt.ema_decay)
    optimizer = nets.sgd(model, opt)
    scheduler = nets.cosine(optimizer, opt.steps, opt.cosine_cycles)
    running = Running(model, train_model, optimizer, scheduler, ema, algo)
    mean, std = t.info.mean, t.info.std
    ssl_step = SSLStep(
        algo,
        model,
        optimizer,
        views=lambda images, names: make_views(
            images, names, mean, std, n_ops=r.ssl.strong_ops, magnitude=r.ssl.strong_magnitude
        ),
        total_steps=opt.steps,
        precision=ctx.precision,
        scheduler=scheduler,
        ema=ema,
        train_model=train_model,
        augmenting=job.augmenting,
    )

    def fetch(step: int) -> dict[str, torch.Tensor]:
        index = job.share(labeled.indices(step))
        batch = {"x": t.images[index], "y": t.labels[index], "x_index": index}
        if pool is not None:
            batch["u_index"] = job.share(unlabeled.indices(step))
            batch["u"] = pool.gather(batch["u_index"])["images"]
        return batch

    def step(i: int, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        return ssl_step(i, batch["x"], batch["y"], batch.get("u"), batch.get("u_index"), batch["x_index"])

    train(job, phase, state, running, opt, fetch, step, t.images.shape[0])
    result = _finish(job, phase, ema.model, running.elapsed(), unwrap=heads.plain)
    if pool is not None:
        shares = evaluate.pseudo_label_shares(job, heads.plain(ema.model), pool)
        ctx.log(stage=phase.name, step=phase.steps, pseudo_label_shares=shares)
        result["pseudo_label_max_share"] = max(shares)
        warning = evaluate.collapse_warning(phase.name, shares, t.info.class_names)
        if warning:
            ctx.warn(warning)
    return result


def build_ssl(name: str, params: dict[str, Any], num_classes: int, num_labeled: int, num_unlabeled: int):
    """The SSL algorithm, its factory also given the sets' sizes if it accepts them.

    ``num_labeled`` is the number of labeled target images, ``num_unlabeled`` the PCS pool's size
    (0 without unlabeled data); ``unlabeled_index`` in ``loss`` indexes that pool.
    """
    sizes = {"num_labeled": num_labeled, "num_unlabeled": num_unlabeled}
    return plugins.get("ssl", name).build(num_classes, params=params, where=f"[ssl] {name}", optional=sizes)


def train_kd(job: Job, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
    """Knowledge distillation: ``CE(f(x), y) + w·D(aux(x), C_s(x))`` on weakly augmented target images.

    ``aux`` is a ``K_s``-way head on the features of the ``K_t`` head; ``D`` is
    :func:`ptl_transfer.kd.kd_loss`: the T²-scaled KL divergence to ``softmax(C_s(x)/T)``
    (Hinton et al.) or the mean squared difference of the logits (logit matching, Ba & Caruana).
    """
    ctx, r, t = job.ctx, job.recipe, job.target
    opt, kd = r.train, r.kd
    classifier = job.sources.classifier
    net = nets.aux_head(job.new_model("target"), classifier.num_classes, generator_for(r.seed, KD_HEAD))
    job.local_batch(opt.batch_size, "train.batch_size")
    model, train_model = prepare_model(net, r.compute, job.device, ctx.dist)
    ema = nets.EMA(model, opt.ema_decay)
    optimizer = nets.sgd(model, opt)
    scheduler = nets.cosine(optimizer, opt.steps, opt.cosine_cycles)
    running = Running(model, train_model, optimizer, scheduler, ema)
    labeled = StepStream(t.images.shape[0], opt.batch_size, r.seed, LABELED_ORDER)
    mean, std = t.info.mean, t.info.std

    def fetch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = job.share(labeled.indices(step))
        return t.images[index], t.labels[index]

    def step(i: int, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        images, y = batch
        with job.augmenting():
            x01 = weak_view(to_float(images))
        with torch.no_grad():
            teacher = classifier(x01).float()
        with ctx.precision.autocast():
            out = train_model(normalize(x01, mean, std), with_heads=True)
            loss_x = F.cross_entropy(out["logits"], y)
            loss_kd = kd_loss(out["aux"], teacher, kd.mode, kd.temperature)
            loss = loss_x + kd.weight * loss_kd
        _update(job, running, loss)
        ema.update(model, i)
        return loss, {"loss_x": loss_x.detach(), "loss_kd": loss_kd.detach()}

    state = nets.renamed_aux_keys(state)  # a KD phase checkpointed by an earlier ptl
    train(job, phase, state, running, opt, fetch, step, t.images.shape[0])
    return _finish(job, phase, ema.model, running.elapsed(), unwrap=heads.plain)


RUNNERS = {
    "scratch": train_target,
    "kd": train_kd,
    "pp-pool": build_pool,
    "pp-pretrain": train_pp,
    "pp": train_target,
    "pcs-pool": build_pool,
    "pssl": train_target,
    "pp+pssl": train_target,
}
