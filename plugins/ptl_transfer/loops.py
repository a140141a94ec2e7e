"""The loops of the ``transfer`` workflow: scratch, KD, PP, P-SSL and PP+P-SSL in one run directory.

Each phase (see :mod:`ptl_transfer.stages`) is one loop below, readable top to bottom:

* :func:`train_target` -- the SSL loop (``supervised`` for scratch and PP fine-tuning, the
  recipe's algorithm for P-SSL), labeled target batches of B plus μB pseudo samples;
* :func:`train_kd` -- supervised loss plus distillation into an auxiliary ``K_s``-way head;
* :func:`train_pp` -- pseudo pre-training on generated, source-labeled samples;
* :func:`build_pool` -- the PP and PCS pools (generated once, cached).

A checkpoint holds the finished phases' results and the running phase's full state (model,
EMA, optimizer, scheduler, step, RNG, SSL state); resume skips finished phases and continues
the running one exactly. Every phase starts from RNG seeded by ``(seed, phase salt)``, so a
stage's result does not depend on which other stages ran before it.

Under ``torchrun`` every rank runs the same loops on its strided share of each global batch
(augmentation draws the global batch's numbers and keeps the share), DDP averages gradients,
logged metrics are global means, evaluation and pool generation are dealt out to the ranks, and
every checkpoint and stage end checks that the ranks hold bit-identical weights.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ptl_cli import atomic, contracts, plugins
from ptl_cli.data.augment import batch_shard
from ptl_cli.data.base import normalize, to_float
from ptl_cli.data.loader import prefetch, step_batches
from ptl_cli.engine import distributed
from ptl_cli.engine.compute import prepare_model
from ptl_cli.engine.interrupt import Interrupted
from ptl_cli.engine.seeding import capture_rng, generator_for, restore_rng
from ptl_ssl.views import make_views, weak_view
from ptl_transfer import nets, pcs, stages
from ptl_transfer.kd import kd_loss
from ptl_transfer.pool import Pool, PoolData
from ptl_transfer.sampling import StepStream
from ptl_transfer.sources import Sources
from ptl_transfer.stages import Phase

# Salts of random streams shared by all phases (phase salts are 1..8, see stages.PHASES).
_INIT, _PP_HEAD, _TARGET_HEAD, _LABELED_ORDER, _POOL_ORDER, _KD_HEAD = 0, 20, 21, 22, 23, 24
CHECKPOINT_VERSION = 1


class Job:
    """One run's shared pieces: recipe, device, target data and source models (built lazily)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.recipe = ctx.recipe
        self.device = ctx.device
        self.sources = Sources(self.recipe, self.device)
        self.done: dict[str, dict[str, Any]] = {}
        self._target = None
        self._pools: dict[str, PoolData] = {}

    @property
    def target(self):
        if self._target is None:
            from ptl_transfer import target

            self._target = target.load(self.recipe)
        return self._target

    # -- data parallelism (all no-ops in one process) --------------------------------------
    def share(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's strided share ``indices[rank::world_size]`` of a global batch."""
        return distributed.rank_share(indices, self.ctx.dist)

    def local_batch(self, global_batch: int, key: str) -> int:
        """The per-rank batch (an error naming ``key`` when it does not split over the ranks)."""
        return distributed.local_batch_size(global_batch, self.ctx.dist, key)

    def augmenting(self):
        """Around augmentation: each rank draws the global batch's numbers and keeps its share."""
        return batch_shard(self.ctx.dist.rank, self.ctx.dist.world_size)

    def my_chunks(self, count: int, size: int = 256) -> torch.Tensor:
        """Indices of this rank's chunks of ``range(count)`` cut into chunks of ``size``.

        Evaluation deals whole chunks to ranks, so each chunk is computed exactly as one process
        computes it and the summed counts equal a single process's.
        """
        chunks = list(torch.arange(count).split(size))
        mine = distributed.rank_share(chunks, self.ctx.dist)
        return torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long)

    def batches(self, fetch: Any, start: int, stop: int, ahead: bool = True) -> Any:
        """``fetch(step)`` for each step, moved to the device (pinned, on a side stream on CUDA).

        With ``ahead`` a background thread fetches the next batches while a step runs, so
        ``fetch`` must draw nothing from torch's global RNG (step streams have their own
        generators): the run is then identical with or without prefetching.
        """
        return prefetch(step_batches(fetch, start, stop), self.device, depth=2 if ahead else 0)

    def in_sync(self, where: str, *modules: torch.nn.Module | None) -> None:
        """Check every rank holds the same weights (rank 0's BatchNorm statistics copied first)."""
        for module in modules:
            if module is not None:
                self.ctx.verify_in_sync(module, where)

    # -- seeding and models ----------------------------------------------------------------
    def seed(self, *salt: int) -> int:
        return generator_for(self.recipe.seed, *salt).initial_seed()

    def new_model(self, head: str) -> torch.nn.Module:
        """The target architecture, identically initialized in every phase.

        ``head`` is ``"target"`` (the model's own K_t head), ``"source"`` (a K_s head for PP) or
        ``"pp"`` (the PP-trained body with a fresh K_t head).
        """
        t = self.target
        torch.manual_seed(self.seed(_INIT))
        model = nets.build(self.recipe, t.num_classes, t.info.channels, t.info.image_size)
        if head in ("source", "pp"):
            nets.swap_head(model, self.num_source_classes, generator_for(self.recipe.seed, _PP_HEAD))
        if head == "pp":
            model.load_state_dict(self.load_stage("pp-pretrain"))
            nets.swap_head(model, t.num_classes, generator_for(self.recipe.seed, _TARGET_HEAD))
        return model

    @property
    def num_source_classes(self) -> int:
        if "num_source_classes" in self.done.get("pp-pretrain", {}):
            return int(self.done["pp-pretrain"]["num_source_classes"])
        return self.sources.generator.num_classes

    # -- stage outputs ---------------------------------------------------------------------
    def stage_path(self, name: str) -> Path:
        return self.ctx.run.path / "stages" / f"{name.replace('+', '_')}.pt"

    def save_stage(self, name: str, state: dict[str, torch.Tensor]) -> None:
        if self.ctx.dist.is_main:
            atomic.torch_save({k: v.detach().cpu() for k, v in state.items()}, self.stage_path(name))

    def load_stage(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.stage_path(name), map_location="cpu", weights_only=True)

    def checkpoint(self, phase: Phase | None, step: int, state: dict[str, Any] | None) -> None:
        payload = {
            "version": CHECKPOINT_VERSION,
            "done": self.done,
            "phase": phase.name if phase and state is not None else None,
            "state": state,
        }
        self.ctx.save_checkpoint(payload, (phase.offset if phase else 0) + step)

    # -- pools -----------------------------------------------------------------------------
    def pp_pool(self) -> Pool:
        r, t = self.recipe, self.target
        g = self.sources.generator
        size = r.pool.shard_size
        key = {
            "generator": g.id,
            "seed": r.pp.seed,
            "shard_size": size,
            "image_size": t.info.image_size,
            "channels": t.info.channels,
            **self._noise_key(),
        }
        return Pool(r.pool.root(), "pp", key, r.pp.samples, math.ceil(r.pp.samples / size))

    def pcs_pool(self) -> Pool:
        from ptl_transfer.pool import tensor_digest

        r, t = self.recipe, self.target
        per_shard = max(1, r.pool.shard_size // r.pcs.per_image)
        key = {
            "generator": self.sources.generator.id,
            "classifier": self.sources.classifier.id,
            "targets": tensor_digest(t.images),
            "per_image": r.pcs.per_image,
            "temperature": r.pcs.temperature,
            "top_k": r.pcs.top_k,
            "seed": r.pcs.seed,
            "images_per_shard": per_shard,
            **self._noise_key(),
        }
        count = t.images.shape[0] * r.pcs.per_image
        return Pool(r.pool.root(), "pcs", key, count, math.ceil(t.images.shape[0] / per_shard))

    def _noise_key(self) -> dict[str, Any]:
        """What else decides a shard's noise: the generator draws it one ``gen_batch_size`` call at a
        time, from a generator on the pool device (CPU and CUDA streams differ), so both are keyed:
        a pool directory then always holds exactly what its key generates."""
        return {"gen_batch_size": self.recipe.pool.gen_batch_size, "device": torch.device(self.device).type}

    def pp_shard_maker(self):
        r, t, g = self.recipe, self.target, self.sources.generator
        size = r.pool.shard_size
        return lambda index: pcs.pp_shard(
            g, index, size, r.pp.seed, t.info.image_size, t.info.channels, r.pool.gen_batch_size, self.device
        )

    def pcs_shard_maker(self):
        r, t = self.recipe, self.target
        per_shard = max(1, r.pool.shard_size // r.pcs.per_image)

        def make(index: int) -> dict[str, torch.Tensor]:
            first = index * per_shard
            return pcs.pcs_shard(
                self.sources.generator,
                self.sources.classifier,
                t.images[first : first + per_shard],
                first,
                index,
                r.pcs.per_image,
                r.pcs.temperature,
                r.pcs.top_k,
                r.pcs.seed,
                r.pool.gen_batch_size,
                self.device,
            )

        return make

    def make_shards(
        self, pool: Pool, maker: Any, should_stop: Any = lambda: False, advance: Any = lambda n=1, **kw: None
    ) -> tuple[bool, list[int]]:
        """Write the pool's missing shards, dealt out to the ranks: ``(finished, shards per rank)``.

        Rank 0 decides what is missing and writes the manifest; shard ``i`` of the missing list
        goes to rank ``i mod N``. A shard's content depends only on its index, so the pool is
        the same file for file however many processes made it. Collective under torchrun.
        """
        dist = self.ctx.dist
        if dist.is_main:
            pool.prepare()
        missing = distributed.broadcast_object(dist, pool.missing() if dist.is_main else None)
        if not missing:
            return True, [0] * dist.world_size
        mine = distributed.work_rounds(missing, dist)
        finished, made = pool.make(mine, maker, should_stop, lambda n=1: advance(n * dist.world_size))
        distributed.barrier(dist)  # every shard is on disk before any rank opens the pool
        return finished, distributed.gather_objects(dist, made)

    def open_pool(self, kind: str) -> PoolData:
        """The PP or PCS pool, generating whatever is missing (e.g. after the cache was cleared)."""
        if kind not in self._pools:
            pool, maker = (
                (self.pp_pool(), self.pp_shard_maker())
                if kind == "pp"
                else (self.pcs_pool(), self.pcs_shard_maker())
            )
            self.make_shards(pool, maker)
            self._pools[kind] = pool.open(maker)
        return self._pools[kind]


# -- the phases -------------------------------------------------------------------------------
def build_pool(job: Job, phase: Phase, state: Any) -> dict[str, Any]:
    """Generate the PP or PCS pool shard by shard (resumes at the first missing shard)."""
    ctx = job.ctx
    kind = "pp" if phase.name == "pp-pool" else "pcs"
    pool = job.pp_pool() if kind == "pp" else job.pcs_pool()
    maker = job.pp_shard_maker() if kind == "pp" else job.pcs_shard_maker()
    started = time.perf_counter()
    missing = len(pool.missing())
    ctx.say(
        f"{phase.name}: {pool.count} samples in {pool.path} ({missing} of {pool.num_shards} shards to make)"
    )
    with ctx.progress.task(phase.name, total=pool.num_shards, completed=pool.num_shards - missing) as advance:
        finished, by_rank = job.make_shards(pool, maker, ctx.should_stop, advance)
    if not finished:
        job.checkpoint(phase, 0, None)
        raise Interrupted
    seconds = time.perf_counter() - started
    data = pool.open(maker)
    job._pools[kind] = data
    result = {"samples": len(data), "generated_shards": missing, "seconds": round(seconds, 3)}
    ranks = {"shards_by_rank": by_rank} if ctx.dist.enabled else {}  # who made what, under torchrun
    ctx.log(stage=phase.name, step=0, pool_samples=len(data), pool_seconds=round(seconds, 3), **ranks)
    if kind == "pcs":
        result["agreement"] = _pcs_agreement(job, data)
    return result


@torch.no_grad()
def _pcs_agreement(job: Job, data: PoolData, limit: int = 2000) -> float:
    """How often ``C_s`` classifies a pseudo sample as its soft label's top class (a sanity check)."""
    counts = torch.zeros(2, dtype=torch.float64)  # agreeing, seen
    index = job.my_chunks(min(limit, len(data)))
    if index.numel():
        batch = data.gather(index)
        logits = pcs.classify(job.sources.classifier, batch["images"], job.device)
        counts += torch.tensor([float((logits.argmax(1) == batch["soft"].argmax(1)).sum()), index.numel()])
    agree, seen = distributed.all_reduce_sum(job.ctx.dist, counts).tolist()
    return agree / max(1.0, seen)


def train_pp(job: Job, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
    """Pseudo pre-training: cross-entropy on generated samples with a K_s-way head."""
    ctx, r, t = job.ctx, job.recipe, job.target
    opt_cfg, dist = r.pp.train, ctx.dist
    local = job.local_batch(opt_cfg.batch_size, "pp.train.batch_size")
    pool = job.open_pool("pp") if r.pp.mode == "pool" else None  # before seeding: may generate
    order = StepStream(len(pool), opt_cfg.batch_size, r.seed, _POOL_ORDER) if pool else None
    model, train_model = prepare_model(job.new_model("source"), r.compute, job.device, dist)
    optimizer = nets.sgd(model, opt_cfg)
    scheduler = nets.cosine(optimizer, opt_cfg.steps, opt_cfg.cosine_cycles)
    start, elapsed = _restore(job, phase, state, model, None, optimizer, scheduler, None)
    mean, std = t.info.mean, t.info.std

    def fetch(step: int) -> dict[str, torch.Tensor]:
        if pool is not None:
            return pool.gather(job.share(order.indices(step)))
        # on the fly each rank generates its own share, the batch (step, rank), on the device
        index = step * dist.world_size + dist.rank
        size, channels = t.info.image_size, t.info.channels
        return pcs.pp_batch(job.sources.generator, index, local, r.pp.seed, size, channels, job.device)

    source_acc = None
    began = time.perf_counter()
    model.train()
    with (
        ctx.progress.task(phase.name, total=opt_cfg.steps, completed=start) as advance,
        job.batches(fetch, start, opt_cfg.steps, ahead=pool is not None) as batches,
    ):
        for step, batch in zip(range(start, opt_cfg.steps), batches, strict=True):
            if ctx.should_stop():
                _interrupt(job, phase, step, model, None, optimizer, scheduler, None, elapsed, began)
            with job.augmenting():
                x = make_views(batch["images"], ("weak",), mean, std)["weak"]
            y = batch["labels"]
            with ctx.precision.autocast():
                logits = train_model(x)
                loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            ctx.precision.backward_and_step(loss, optimizer)
            scheduler.step()
            if (step + 1) % opt_cfg.log_every == 0 or step + 1 == opt_cfg.steps:
                acc = (logits.detach().argmax(1) == y).float().mean()  # this batch's
                values = ctx.global_mean(loss=loss, train_acc=acc)  # the global batch's
                ctx.check_finite(values["loss"], f"{phase.name} step {step + 1}")
                source_acc = values["train_acc"]
                ctx.log(
                    stage=phase.name,
                    step=step + 1,
                    epoch=(step + 1) * opt_cfg.batch_size // (len(pool) if pool else opt_cfg.batch_size),
                    loss=values["loss"],
                    train_acc=source_acc,
                    lr=scheduler.get_last_lr()[0],
                )
                advance(opt_cfg.log_every, loss=values["loss"])
            if (step + 1) % opt_cfg.checkpoint_every == 0 and step + 1 < opt_cfg.steps:
                _save(job, phase, step + 1, model, None, optimizer, scheduler, None, elapsed, began)
    job.in_sync(f"the end of {phase.name}", model)
    job.save_stage(phase.name, model.state_dict())
    if source_acc is None:  # resumed after the last logged step: take it from the metrics
        last = [m for m in ctx.run.metrics() if m.get("stage") == phase.name and "train_acc" in m]
        source_acc = last[-1]["train_acc"] if last else None
    return {
        "source_train_acc": source_acc,
        "num_source_classes": job.num_source_classes,
        "steps": opt_cfg.steps,
        "seconds": round(elapsed + time.perf_counter() - began, 3),
    }


def train_target(job: Job, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
    """The SSL loop: B labeled target images (+ μB PCS pseudo samples) per step, EMA for evaluation.

    ``scratch`` and ``pp`` use the ``supervised`` algorithm (no unlabeled batch); ``pssl`` and
    ``pp+pssl`` use the recipe's algorithm over the PCS pool. ``pp`` and ``pp+pssl`` start from
    the PP body with a fresh K_t head.
    """
    ctx, r, t = job.ctx, job.recipe, job.target
    opt_cfg = r.train
    semi = phase.name in ("pssl", "pp+pssl")
    algo_name, algo_params = (r.ssl.name, r.ssl.params) if semi else ("supervised", {})
    num_unlabeled = job.pcs_pool().count if semi else 0  # the pool's size, known before it is made
    algo = build_ssl(algo_name, algo_params, t.num_classes, t.images.shape[0], num_unlabeled)
    loss_extra = contracts.optional_arguments("ssl", "loss", algo.loss, {"unlabeled_index": None})
    pool = job.open_pool("pcs") if algo.unlabeled_views else None  # before seeding: may generate
    unlabeled = StepStream(len(pool), r.ssl.mu * opt_cfg.batch_size, r.seed, _POOL_ORDER) if pool else None
    labeled = StepStream(t.images.shape[0], opt_cfg.batch_size, r.seed, _LABELED_ORDER)
    job.local_batch(opt_cfg.batch_size, "train.batch_size")
    model, train_model = prepare_model(
        job.new_model("pp" if phase.name.startswith("pp") else "target"), r.compute, job.device, ctx.dist
    )
    ema = nets.EMA(model, opt_cfg.ema_decay)
    optimizer = nets.sgd(model, opt_cfg)
    scheduler = nets.cosine(optimizer, opt_cfg.steps, opt_cfg.cosine_cycles)
    start, elapsed = _restore(job, phase, state, model, ema, optimizer, scheduler, algo)
    mean, std = t.info.mean, t.info.std

    def fetch(step: int) -> dict[str, torch.Tensor]:
        index = job.share(labeled.indices(step))
        batch = {"x": t.images[index], "y": t.labels[index]}
        if pool is not None:
            batch["u_index"] = job.share(unlabeled.indices(step))
            batch["u"] = pool.gather(batch["u_index"])["images"]
        return batch

    began = time.perf_counter()
    model.train()
    with (
        ctx.progress.task(phase.name, total=opt_cfg.steps, completed=start) as advance,
        job.batches(fetch, start, opt_cfg.steps) as batches,
    ):
        for step, batch in zip(range(start, opt_cfg.steps), batches, strict=True):
            if ctx.should_stop():
                _interrupt(job, phase, step, model, ema, optimizer, scheduler, algo, elapsed, began)
            y = batch["y"]
            views_u = {}
            with job.augmenting():
                views_x = make_views(batch["x"], algo.labeled_views, mean, std)
                if pool is not None:
                    views_u = make_views(batch["u"], algo.unlabeled_views, mean, std)
            # The loss too draws under augmenting(): MeanTeacher makes its two weak views in there.
            with job.augmenting(), ctx.precision.autocast():
                if loss_extra:  # only for a loss that declares it (docs/plugins/reference.md)
                    loss_extra["unlabeled_index"] = batch.get("u_index")
                loss, logs = algo.loss(train_model, views_x, y, views_u, step, opt_cfg.steps, **loss_extra)
            optimizer.zero_grad(set_to_none=True)
            ctx.precision.backward_and_step(loss, optimizer)
            scheduler.step()
            algo.after_step(train_model, step)
            ema.update(model, step)
            _log_and_save(job, phase, step, opt_cfg, loss, logs, scheduler, advance)
            if (step + 1) % opt_cfg.checkpoint_every == 0 and step + 1 < opt_cfg.steps:
                _save(job, phase, step + 1, model, ema, optimizer, scheduler, algo, elapsed, began)
            if opt_cfg.eval_every and (step + 1) % opt_cfg.eval_every == 0 and step + 1 < opt_cfg.steps:
                ctx.log(stage=phase.name, step=step + 1, test_acc=_test_accuracy(job, ema.model))
    result = _finish(job, phase, ema.model, elapsed + time.perf_counter() - began)
    if pool is not None:
        shares = _pseudo_label_shares(job, ema.model, pool)
        job.ctx.log(stage=phase.name, step=phase.steps, pseudo_label_shares=shares)
        result["pseudo_label_max_share"] = max(shares)
        warning = collapse_warning(phase.name, shares, job.target.info.class_names)
        if warning:
            job.ctx.warn(warning)
    return result


def build_ssl(name: str, params: dict[str, Any], num_classes: int, num_labeled: int, num_unlabeled: int):
    """The SSL algorithm, its factory also given the sets' sizes if it accepts them.

    ``num_labeled`` is the number of labeled target images, ``num_unlabeled`` the PCS pool's size
    (0 without unlabeled data); ``unlabeled_index`` in ``loss`` indexes that pool.
    """
    spec = plugins.get("ssl", name)
    where = f"[ssl] {name}"
    if spec.params is not None:
        contracts.ensure_no_reserved_params("ssl", spec.params.model_fields, where)
    sizes = {"num_labeled": num_labeled, "num_unlabeled": num_unlabeled}
    extra = contracts.optional_arguments("ssl", "factory", spec.load_factory(), sizes)
    return spec.build(num_classes, params=params, where=where, **extra)


#: Above this share of pseudo samples in one target class, a run warns that PCS collapsed: the
#: far quickstart pair gives 1.0 (every garment is a "shirt"), the covered pair 0.2-0.3.
COLLAPSE_SHARE = 0.8


def collapse_warning(stage: str, shares: list[float], class_names: tuple[str, ...]) -> str | None:
    """One line when the final model puts more than ``COLLAPSE_SHARE`` of the pseudo samples in
    one target class: the source then covers only that class, and P-SSL has little to teach."""
    top = max(range(len(shares)), key=shares.__getitem__)
    if shares[top] <= COLLAPSE_SHARE:
        return None
    name = class_names[top] if top < len(class_names) else str(top)
    return f"{stage}: pseudo labels collapsed onto {name} ({shares[top]:.0%} of the pool)"


def train_kd(job: Job, phase: Phase, state: dict[str, Any] | None) -> dict[str, Any]:
    """Knowledge distillation: ``CE(f(x), y) + w·D(aux(x), C_s(x))`` on weakly augmented target images.

    ``aux`` is a ``K_s``-way head on the features of the ``K_t`` head; ``D`` is
    :func:`ptl_transfer.kd.kd_loss`: the T²-scaled KL divergence to ``softmax(C_s(x)/T)``
    (Hinton et al.) or the mean squared difference of the logits (logit matching, Ba & Caruana).
    """
    ctx, r, t = job.ctx, job.recipe, job.target
    opt_cfg, kd = r.train, r.kd
    classifier = job.sources.classifier
    net = nets.AuxHead(job.new_model("target"), classifier.num_classes, generator_for(r.seed, _KD_HEAD))
    job.local_batch(opt_cfg.batch_size, "train.batch_size")
    model, train_model = prepare_model(net, r.compute, job.device, ctx.dist)
    ema = nets.EMA(model, opt_cfg.ema_decay)
    optimizer = nets.sgd(model, opt_cfg)
    scheduler = nets.cosine(optimizer, opt_cfg.steps, opt_cfg.cosine_cycles)
    start, elapsed = _restore(job, phase, state, model, ema, optimizer, scheduler, None)
    labeled = StepStream(t.images.shape[0], opt_cfg.batch_size, r.seed, _LABELED_ORDER)
    mean, std = t.info.mean, t.info.std
    began = time.perf_counter()
    model.train()

    def fetch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = job.share(labeled.indices(step))
        return t.images[index], t.labels[index]

    with (
        ctx.progress.task(phase.name, total=opt_cfg.steps, completed=start) as advance,
        job.batches(fetch, start, opt_cfg.steps) as batches,
    ):
        for step, (images, y) in zip(range(start, opt_cfg.steps), batches, strict=True):
            if ctx.should_stop():
                _interrupt(job, phase, step, model, ema, optimizer, scheduler, None, elapsed, began)
            with job.augmenting():
                x01 = weak_view(to_float(images))
            with torch.no_grad():
                teacher = classifier(x01).float()
            with ctx.precision.autocast():
                logits = train_model(normalize(x01, mean, std))
                loss_x = F.cross_entropy(logits, y)
                loss_kd = kd_loss(model.aux_logits, teacher, kd.mode, kd.temperature)
                loss = loss_x + kd.weight * loss_kd
            optimizer.zero_grad(set_to_none=True)
            ctx.precision.backward_and_step(loss, optimizer)
            scheduler.step()
            ema.update(model, step)
            logs = {"loss_x": loss_x.detach(), "loss_kd": loss_kd.detach()}
            _log_and_save(job, phase, step, opt_cfg, loss, logs, scheduler, advance)
            if (step + 1) % opt_cfg.checkpoint_every == 0 and step + 1 < opt_cfg.steps:
                _save(job, phase, step + 1, model, ema, optimizer, scheduler, None, elapsed, began)
            if opt_cfg.eval_every and (step + 1) % opt_cfg.eval_every == 0 and step + 1 < opt_cfg.steps:
                ctx.log(stage=phase.name, step=step + 1, test_acc=_test_accuracy(job, ema.model))
    return _finish(job, phase, ema.model, elapsed + time.perf_counter() - began, unwrap=lambda m: m.net)


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


# -- shared loop pieces -----------------------------------------------------------------------
def _test_accuracy(job: Job, model: torch.nn.Module) -> float:
    from ptl_transfer.target import batches

    t = job.target
    data = batches(t.test, 256, job.recipe.compute.workers, indices=job.my_chunks(len(t.test)))
    counts = nets.count_correct(model, data, t.info.mean, t.info.std, job.device, job.ctx.precision)
    total = distributed.all_reduce_sum(job.ctx.dist, torch.tensor(counts, dtype=torch.float64))
    correct, seen = total.tolist()
    return correct / max(1.0, seen)


def _finish(job: Job, phase: Phase, model: torch.nn.Module, seconds: float, unwrap=lambda m: m) -> dict:
    job.in_sync(f"the end of {phase.name}", model)
    acc = _test_accuracy(job, model)
    job.ctx.log(stage=phase.name, step=phase.steps, test_acc=acc)
    job.save_stage(phase.name, unwrap(model).state_dict())
    job.ctx.say(f"{phase.name}: test accuracy {acc:.4f}")
    return {"test_acc": acc, "steps": phase.steps, "seconds": round(seconds, 3)}


@torch.no_grad()
def _pseudo_label_shares(job: Job, model: torch.nn.Module, pool: PoolData, limit: int = 2000) -> list[float]:
    """The share of pseudo samples the final model puts in each target class.

    A diagnostic for P-SSL: when the source classes resemble only one target class, every pseudo
    sample lands there (share ~1.0) and the unlabeled loss teaches little.
    """
    t = job.target
    images = pool.gather(job.my_chunks(min(limit, len(pool))))["images"]
    counts = torch.zeros(t.num_classes, dtype=torch.float64)
    model.eval()
    for chunk in images.split(256):
        x = normalize(to_float(chunk.to(job.device)), t.info.mean, t.info.std)
        with job.ctx.precision.autocast():
            counts += torch.bincount(model(x).argmax(1).cpu(), minlength=t.num_classes).double()
    distributed.all_reduce_sum(job.ctx.dist, counts)
    return [round(float(c), 4) for c in counts / counts.sum()]


def _log_and_save(job, phase, step, opt_cfg, loss, logs, scheduler, advance) -> None:
    """Every ``log_every`` steps: a metrics record (``epoch`` counts passes over the labeled set)."""
    if (step + 1) % opt_cfg.log_every == 0 or step + 1 == opt_cfg.steps:
        values = job.ctx.global_mean(loss=loss, **logs)  # the global batch's (a collective)
        job.ctx.check_finite(values["loss"], f"{phase.name} step {step + 1}")
        epoch = (step + 1) * opt_cfg.batch_size // job.target.images.shape[0]
        lr = scheduler.get_last_lr()[0]
        loss_value = values.pop("loss")
        job.ctx.log(stage=phase.name, step=step + 1, epoch=epoch, loss=loss_value, lr=lr, **values)
        advance(opt_cfg.log_every, loss=loss_value)


def _state(step, model, ema, optimizer, scheduler, algo, job, seconds) -> dict[str, Any]:
    return {
        "step": step,
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "ssl": algo.state_dict() if algo is not None else None,
        "precision": job.ctx.precision.state_dict(),
        "rng": capture_rng(),
        "seconds": seconds,
    }


def _save(job, phase, step, model, ema, optimizer, scheduler, algo, elapsed, began) -> None:
    job.in_sync(f"{phase.name} step {step}", model, ema.model if ema is not None else None)
    seconds = elapsed + time.perf_counter() - began
    job.checkpoint(phase, step, _state(step, model, ema, optimizer, scheduler, algo, job, seconds))


def _interrupt(job, phase, step, model, ema, optimizer, scheduler, algo, elapsed, began) -> None:
    _save(job, phase, step, model, ema, optimizer, scheduler, algo, elapsed, began)
    raise Interrupted


def _restore(job, phase, state, model, ema, optimizer, scheduler, algo) -> tuple[int, float]:
    """Load a running phase's state (returns the step to continue at and the seconds spent)."""
    if state is None:
        torch.manual_seed(job.seed(phase.salt))
        return 0, 0.0
    model.load_state_dict(state["model"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if algo is not None and state.get("ssl") is not None:
        algo.load_state_dict(state["ssl"])
    job.ctx.precision.load_state_dict(state.get("precision"))
    restore_rng(state["rng"])
    job.ctx.say(f"{phase.name}: resuming at step {state['step']}")
    return int(state["step"]), float(state.get("seconds", 0.0))


# -- the run ------------------------------------------------------------------------------------
def run(ctx: Any) -> dict[str, Any]:
    """Every phase of the recipe in order, skipping finished ones; returns the final metrics."""
    job = Job(ctx)
    saved = ctx.load_checkpoint()
    current, state = None, None
    if saved is not None:
        job.done = dict(saved["done"])
        current, state = saved.get("phase"), saved.get("state")
        if ctx.dist.is_main:
            _truncate_metrics(ctx.run, job.done, current, state)
    elif ctx.resuming and ctx.dist.is_main:
        ctx.run.truncate_metrics(lambda record: False)  # no checkpoint yet: start over
    for phase in stages.phases(ctx.recipe):
        if phase.name in job.done:
            continue
        resume_state = state if current == phase.name else None
        job.done[phase.name] = RUNNERS[phase.name](job, phase, resume_state)
        job.checkpoint(phase, phase.steps, None)
    return final_metrics(job)


def final_metrics(job: Job) -> dict[str, Any]:
    chosen = job.recipe.stages
    final = stages.final_stage(chosen)
    metrics: dict[str, Any] = {"test_acc": job.done[final]["test_acc"], "final_stage": final}
    for name in chosen:
        metrics[stages.metric_key(name)] = job.done[name]["test_acc"]
        metrics[stages.metric_key(name).replace("test_acc", "seconds")] = job.done[name]["seconds"]
    if "pcs-pool" in job.done and "agreement" in job.done["pcs-pool"]:
        metrics["pcs_agreement"] = job.done["pcs-pool"]["agreement"]
    if "pp-pretrain" in job.done:
        metrics["pp_source_train_acc"] = job.done["pp-pretrain"]["source_train_acc"]
    for name in ("pssl", "pp+pssl"):
        if name in chosen and "pseudo_label_max_share" in job.done[name]:
            key = stages.metric_key(name).replace("test_acc", "pseudo_label_max_share")
            metrics[key] = job.done[name]["pseudo_label_max_share"]
    metrics["labeled"] = int(job.target.images.shape[0])
    _write_final_model(job, final)
    return metrics


def _truncate_metrics(run: Any, done: dict[str, Any], current: str | None, state: Any) -> None:
    """Drop records written after the checkpoint (they will be written again)."""
    step = state["step"] if state is not None else -1

    def keep(record: dict[str, Any]) -> bool:
        stage = record.get("stage")
        return stage in done or (stage == current and record.get("step", 0) <= step)

    run.truncate_metrics(keep)


def _write_final_model(job: Job, final: str) -> None:
    """``RUN/model.pt``: the full method's (EMA) weights with what is needed to rebuild the net."""
    if not job.ctx.dist.is_main:
        return
    t, m = job.target, job.recipe.model
    payload = {
        "state_dict": job.load_stage(final),
        "stage": final,
        "arch": m.arch,
        "width": m.width,
        "model_params": dict(m.params),
        "num_classes": t.num_classes,
        "in_channels": t.info.channels,
        "image_size": t.info.image_size,
        "class_names": list(t.info.class_names),
        "mean": list(t.info.mean),
        "std": list(t.info.std),
    }
    atomic.torch_save(payload, job.ctx.run.path / "model.pt")
