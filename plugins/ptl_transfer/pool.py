"""The pseudo-sample pool: generated images stored once on disk, reused across runs.

PP and PCS share this one mechanism. A pool is a directory under ``<cache>/pools`` named by a
digest of everything that determines its content (generator id, classifier id, seed, image
format, ...), holding

    manifest.json          the key, the shard size and the item count (written atomically)
    shard-00000.pt ...     {"images": uint8 (n, C, H, W), "labels": int64 (n,), optional
                            "soft": float32 (n, K_s) and "index": int64 (n,)}, each atomic

A shard's content is a pure function of ``(key, shard index)`` -- its noise comes from
``generator_for(seed, ..., shard)`` -- so generation that was interrupted resumes at the first
missing shard and ends with exactly the pool an uninterrupted generation makes, and data-parallel
ranks split the missing shards between them (:func:`make_shards`). Shards load memory-mapped, so
pools larger than RAM work.

The end of the module plans a transfer run's two pools from its recipe: :func:`pp_pool` and
:func:`pcs_pool` give each pool (named by its key) with the function that makes its shards.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptl_cli import atomic
from ptl_cli.data.augment import match_channels, resize
from ptl_cli.errors import RunFailure

#: Pools up to this size are concatenated in memory (fastest gathers); larger ones stay mmapped.
IN_MEMORY_BYTES = 2 << 30

ShardMaker = Callable[[int], dict[str, torch.Tensor]]


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def tensor_digest(tensor: torch.Tensor) -> str:
    """A content digest of a tensor (the PCS pool is keyed by the target images it came from)."""
    data = tensor.detach().cpu().contiguous()
    h = hashlib.sha256(f"{data.dtype}{tuple(data.shape)}".encode())
    h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


def to_uint8(images: torch.Tensor, size: int, channels: int, on_host: bool = True) -> torch.Tensor:
    """Generator output in [0, 1] -> the target's format: resized, channel-matched uint8, copied to
    the host for a pool on disk (``on_host``) or left on the device for training on the fly."""
    from ptl_cli.engine.sync import host_sync

    images = match_channels(resize(images.float(), size), channels)
    images = images.clamp(0, 1).mul(255).round_().to(torch.uint8)
    if not on_host:
        return images
    with host_sync("pool shard to disk"):
        return images.cpu()


@dataclass
class PoolData:
    """An opened pool: ``gather(indices)`` returns a batch as a dict of CPU tensors."""

    shards: list[dict[str, torch.Tensor]]
    count: int

    def __post_init__(self) -> None:
        sizes = torch.tensor([int(s["labels"].shape[0]) for s in self.shards])
        self._ends = torch.cumsum(sizes, 0)
        if int(self._ends[-1]) < self.count:
            raise RunFailure(f"pool holds {int(self._ends[-1])} items, fewer than the {self.count} asked for")

    def __len__(self) -> int:
        return self.count

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.shards[0])

    def gather(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Items ``indices`` (in that order) from whichever shards hold them."""
        if len(self.shards) == 1:
            return {k: v[indices] for k, v in self.shards[0].items()}
        which = torch.bucketize(indices, self._ends, right=True)
        starts = torch.cat([torch.zeros(1, dtype=torch.long), self._ends[:-1]])
        out = {k: None for k in self.fields}
        order = torch.empty_like(indices)
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in self.fields}
        done = 0
        for shard in torch.unique(which).tolist():
            sel = torch.nonzero(which == shard).flatten()
            local = indices[sel] - starts[shard]
            for k in self.fields:
                parts[k].append(self.shards[shard][k][local])
            order[sel] = torch.arange(done, done + sel.numel())
            done += sel.numel()
        for k in self.fields:
            out[k] = torch.cat(parts[k])[order]
        return out

    def all(self) -> dict[str, torch.Tensor]:
        """The whole pool (in memory): for tests and small pools."""
        return self.gather(torch.arange(self.count))


class Pool:
    """One pool directory: its key, which shards exist, building and opening it."""

    def __init__(self, root: Path, kind: str, key: dict[str, Any], count: int, num_shards: int) -> None:
        self.key = {"kind": kind, **key}
        self.count = count
        self.num_shards = num_shards
        label = str(key.get("generator", "gen")).split("@")[0]
        label = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)[:40]
        self.path = Path(root) / f"{kind}-{label}-{digest(self.key)[:16]}"

    def shard_path(self, index: int) -> Path:
        return self.path / f"shard-{index:05d}.pt"

    def missing(self) -> list[int]:
        return [i for i in range(self.num_shards) if not self.shard_path(i).is_file()]

    def _write_manifest(self) -> None:
        """Record what the pool is; refuse a directory whose manifest describes another pool."""
        manifest = self.path / "manifest.json"
        saved: dict[str, Any] = {}
        if manifest.is_file():
            try:
                saved = json.loads(manifest.read_text())
            except (OSError, ValueError):
                saved = {}  # a manifest is rewritten whole, so this is a foreign file: replace it
            if saved.get("digest", digest(self.key)) != digest(self.key):
                raise RunFailure(
                    f"pool {self.path} holds a different pool (its manifest key differs); delete that "
                    "directory and run again"
                )
        record = {
            "key": self.key,
            "digest": digest(self.key),
            "count": max(self.count, int(saved.get("count", 0))),
            "shards": max(self.num_shards, int(saved.get("shards", 0))),
        }
        if record != saved:
            atomic.write_json(manifest, record)

    def prepare(self) -> None:
        """Create the directory and its manifest (under torchrun: rank 0 alone, then a barrier)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_manifest()

    def build(
        self,
        make_shard: ShardMaker,
        should_stop: Callable[[], bool] = lambda: False,
        advance: Callable[..., None] = lambda n=1, **kw: None,
    ) -> bool:
        """Write every missing shard; False when ``should_stop`` asked to stop first."""
        self.prepare()
        finished, _ = self.make(self.missing(), make_shard, should_stop, advance)
        return finished

    def make(
        self,
        indices: list[int | None],
        make_shard: ShardMaker,
        should_stop: Callable[[], bool] = lambda: False,
        advance: Callable[..., None] = lambda n=1, **kw: None,
    ) -> tuple[bool, int]:
        """Write shards ``indices`` (one round each; ``None`` is an idle round) into a prepared pool.

        Returns ``(finished, shards written)``. ``should_stop`` is asked once per round, idle
        rounds included, so data-parallel ranks given equally long lists (see
        :func:`ptl_cli.engine.distributed.work_rounds`) poll it, a collective, equally often.
        """
        made = 0
        for index in indices:
            if should_stop():
                return False, made
            if index is None:
                continue
            shard = make_shard(index)
            atomic.torch_save({k: v.contiguous() for k, v in shard.items()}, self.shard_path(index))
            made += 1
            advance(1)
        return True, made

    def open(self, make_shard: ShardMaker | None = None) -> PoolData:
        """Load every shard memory-mapped; a shard that cannot be read is regenerated (or an error)."""
        shards = []
        for index in range(self.num_shards):
            shards.append(self._load(index, make_shard))
        total = sum(s["images"].numel() for s in shards)
        if len(shards) > 1 and total <= IN_MEMORY_BYTES:
            shards = [{k: torch.cat([s[k] for s in shards]) for k in shards[0]}]
        return PoolData(shards, self.count)

    def _load(self, index: int, make_shard: ShardMaker | None) -> dict[str, torch.Tensor]:
        path = self.shard_path(index)
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable shard is regenerated or reported
            if make_shard is None:
                raise RunFailure(
                    f"pool shard {path} cannot be read ({type(exc).__name__}); delete it and run again "
                    "(it will be regenerated)"
                ) from None
            path.unlink(missing_ok=True)
            atomic.torch_save(make_shard(index), path)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


# -- the run's two pools: what keys them and what makes their shards ----------------------------
def noise_key(recipe: Any, device: Any) -> dict[str, Any]:
    """What else decides a shard's noise: the generator draws it one ``gen_batch_size`` call at a
    time, from a generator on the pool device (CPU and CUDA streams differ), so both are keyed:
    a pool directory then always holds exactly what its key generates."""
    return {"gen_batch_size": recipe.pool.gen_batch_size, "device": torch.device(device).type}


def pp_pool(recipe: Any, target: Any, sources: Any, device: Any) -> tuple[Pool, ShardMaker]:
    """The PP pool (generated, source-labeled samples) and the maker of its shards."""
    r, info, g = recipe, target.info, sources.generator
    size = r.pool.shard_size
    key = {
        "generator": g.id,
        "seed": r.pp.seed,
        "shard_size": size,
        "image_size": info.image_size,
        "channels": info.channels,
        **noise_key(r, device),
    }
    pool = Pool(r.pool.root(), "pp", key, r.pp.samples, math.ceil(r.pp.samples / size))

    def make(index: int) -> dict[str, torch.Tensor]:
        from ptl_transfer import pcs

        return pcs.pp_shard(
            g, index, size, r.pp.seed, info.image_size, info.channels, r.pool.gen_batch_size, device
        )

    return pool, make


def pcs_pool(recipe: Any, target: Any, sources: Any, device: Any) -> tuple[Pool, ShardMaker]:
    """The PCS pool (``pcs.per_image`` pseudo samples per labeled target image) and its shard maker."""
    r, images = recipe, target.images
    per_shard = max(1, r.pool.shard_size // r.pcs.per_image)
    key = {
        "generator": sources.generator.id,
        "classifier": sources.classifier.id,
        "targets": tensor_digest(images),
        "per_image": r.pcs.per_image,
        "temperature": r.pcs.temperature,
        "top_k": r.pcs.top_k,
        "seed": r.pcs.seed,
        "images_per_shard": per_shard,
        **noise_key(r, device),
    }
    count = images.shape[0] * r.pcs.per_image
    pool = Pool(r.pool.root(), "pcs", key, count, math.ceil(images.shape[0] / per_shard))

    def make(index: int) -> dict[str, torch.Tensor]:
        from ptl_transfer import pcs

        first = index * per_shard
        c = r.pcs
        return pcs.pcs_shard(
            sources.generator,
            sources.classifier,
            images[first : first + per_shard],
            first,
            index,
            c.per_image,
            c.temperature,
            c.top_k,
            c.seed,
            r.pool.gen_batch_size,
            device,
        )

    return pool, make


def make_shards(
    pool: Pool,
    maker: ShardMaker,
    dist: Any,
    should_stop: Callable[[], bool] = lambda: False,
    advance: Callable[..., None] = lambda n=1, **kw: None,
) -> tuple[bool, list[int]]:
    """Write the pool's missing shards, dealt out to the ranks: ``(finished, shards per rank)``.

    Rank 0 decides what is missing and writes the manifest; shard ``i`` of the missing list
    goes to rank ``i mod N``. A shard's content depends only on its index, so the pool is
    the same file for file however many processes made it. Collective under torchrun.
    """
    from ptl_cli.engine import distributed

    if dist.is_main:
        pool.prepare()
    missing = distributed.broadcast_object(dist, pool.missing() if dist.is_main else None)
    if not missing:
        return True, [0] * dist.world_size
    mine = distributed.work_rounds(missing, dist)
    finished, made = pool.make(mine, maker, should_stop, lambda n=1: advance(n * dist.world_size))
    distributed.barrier(dist)  # every shard is on disk before any rank opens the pool
    return finished, distributed.gather_objects(dist, made)
