"""One transfer run's shared pieces, which every stage asks for: :class:`Job`.

It holds the recipe, the device, the target data and the source models (both built when a stage
first needs them), the finished stages' results, and the opened pools; it builds each stage's
network, identically initialized in every stage; it writes and reads the stages' output weights;
and it wraps the data-parallel pieces the loops use (all no-ops in one process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ptl_cli import atomic
from ptl_cli.data.augment import batch_shard
from ptl_cli.data.loader import prefetch, step_batches
from ptl_cli.engine import distributed
from ptl_cli.engine.seeding import generator_for
from ptl_transfer import nets
from ptl_transfer.pool import Pool, PoolData, ShardMaker, make_shards, pcs_pool, pp_pool
from ptl_transfer.sources import Sources

#: Salts of random streams shared by all stages (stage salts are 1..8, see stages.PHASES).
INIT, PP_HEAD, TARGET_HEAD, LABELED_ORDER, POOL_ORDER, KD_HEAD = 0, 20, 21, 22, 23, 24
#: The salt of an SSL algorithm's own heads' initialization (ptl_cli.engine.heads.attach).
SSL_HEADS = 25


class Job:
    """One run's shared pieces: recipe, device, target data and source models (built lazily)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.recipe = ctx.recipe
        self.device = ctx.device
        self.sources = Sources(self.recipe, self.device)
        self.done: dict[str, dict[str, Any]] = {}
        self._target = None
        self.pools: dict[str, Any] = {}  # opened unlabeled sets: "pp", "pcs" pools, the "real" control

    @property
    def target(self):
        if self._target is None:
            from ptl_transfer import target

            self._target = target.load(self.recipe)
        return self._target

    # -- seeding and models ----------------------------------------------------------------
    def seed(self, *salt: int) -> int:
        return generator_for(self.recipe.seed, *salt).initial_seed()

    def new_model(self, head: str) -> torch.nn.Module:
        """The target architecture, identically initialized in every stage.

        ``head`` is ``"target"`` (the model's own K_t head), ``"source"`` (a K_s head for PP) or
        ``"pp"`` (the PP-trained body with a fresh K_t head).
        """
        t = self.target
        torch.manual_seed(self.seed(INIT))
        model = nets.build(self.recipe, t.num_classes, t.info.channels, t.info.image_size)
        if head in ("source", "pp"):
            nets.swap_head(model, self.num_source_classes, generator_for(self.recipe.seed, PP_HEAD))
        if head == "pp":
            model.load_state_dict(self.load_stage("pp-pretrain"))
            nets.swap_head(model, t.num_classes, generator_for(self.recipe.seed, TARGET_HEAD))
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
        from ptl_cli.engine.sync import host_sync

        if self.ctx.dist.is_main:
            with host_sync("a stage's trained weights to disk"):
                atomic.torch_save({k: v.detach().cpu() for k, v in state.items()}, self.stage_path(name))

    def load_stage(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.stage_path(name), map_location="cpu", weights_only=True)

    # -- pools -----------------------------------------------------------------------------
    def pool(self, kind: str) -> tuple[Pool, ShardMaker]:
        """The ``"pp"`` or ``"pcs"`` pool this run uses (see :mod:`ptl_transfer.pool`) and its maker."""
        plan = pp_pool if kind == "pp" else pcs_pool
        return plan(self.recipe, self.target, self.sources, self.device)

    def open_pool(self, kind: str) -> PoolData:
        """The PP or PCS pool, generating whatever is missing (e.g. after the cache was cleared)."""
        if kind not in self.pools:
            found, maker = self.pool(kind)
            make_shards(found, maker, self.ctx.dist)
            self.pools[kind] = found.open(maker)
        return self.pools[kind]

    def unlabeled_count(self) -> int:
        """The size of the P-SSL stages' unlabeled set, known before a pool is made: the PCS pool's,
        or with ``ssl.unlabeled = "real"`` the target's own unlabeled training images'."""
        if self.recipe.ssl.unlabeled == "real":
            return len(self.open_unlabeled())
        return self.pool("pcs")[0].count

    def open_unlabeled(self) -> Any:
        """The P-SSL stages' unlabeled set (``len`` and ``gather``): the PCS pool (generating what
        is missing), or the real-images control, loaded once for both stages."""
        if self.recipe.ssl.unlabeled != "real":
            return self.open_pool("pcs")
        if "real" not in self.pools:
            from ptl_transfer.target import real_unlabeled

            self.pools["real"] = real_unlabeled(self.recipe, self.target)
        return self.pools["real"]

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
