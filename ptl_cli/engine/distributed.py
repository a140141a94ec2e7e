"""Data-parallel plumbing for runs started under ``torchrun`` (one process per GPU or CPU slot).

A run is distributed when ``WORLD_SIZE`` > 1 in the environment. The rules every workflow keeps:

* **Same randomness everywhere.** Every rank seeds its global RNG from the recipe seed, so model
  initialization, IteRand re-draws (seeded by ``(seed, step)``) and batch orders agree without
  communication. Per-sample randomness is drawn for the *global* batch and sliced (see
  :func:`ptl_cli.data.augment.batch_shard`), so N ranks draw what one process would.
* **Strided shares.** A global batch of indices ``b`` is split as ``b[rank::world_size]`` (the
  :class:`~ptl_cli.data.sampler.ResumableSampler` convention): rank ``r`` holds the same images
  whatever produced the batch.
* **Rank 0 writes** the run directory, metrics and checkpoints; the others wait at a barrier.
* **Control traffic off the accelerator.** Stop requests, barriers and small objects travel
  over a gloo group on the CPU, so polling them never synchronizes a CUDA stream.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ptl_cli.errors import RunFailure, UserError

#: How long a collective may wait for a slow rank (pool generation, evaluation) before failing.
TIMEOUT = timedelta(minutes=int(os.environ.get("PTL_DIST_TIMEOUT_MIN", "60")))

_control: dict[str, Any] = {}  # the CPU (gloo) process group for control messages, once made


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """The ranks torchrun announces; a half-set environment is a clear error, not a hang."""
    try:
        info = DistInfo(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )
    except ValueError:
        raise UserError(
            "RANK/WORLD_SIZE/LOCAL_RANK must be integers; start data-parallel runs with torchrun"
        ) from None
    if info.enabled and not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
        raise UserError(
            f"WORLD_SIZE={info.world_size} but MASTER_ADDR/MASTER_PORT are not set; start data-parallel "
            "runs with `torchrun --nproc-per-node N -m ptl_cli ...` (see docs/scale.md)"
        )
    if not 0 <= info.rank < info.world_size:
        raise UserError(f"RANK={info.rank} is outside 0..WORLD_SIZE-1={info.world_size - 1}")
    return info


def local_device(info: DistInfo, device: Any) -> Any:
    """Each process drives the GPU of its ``LOCAL_RANK``; other device types are shared.

    A single process drives the GPU it was given (``cuda:1`` included): it becomes the current
    device, so streams, cuDNN handles and any allocation that names no index land there too.
    """
    import torch

    if device.type != "cuda":
        return device
    if info.enabled:
        if info.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible; lower --nproc-per-node"
            )
        device = torch.device("cuda", info.local_rank)
    torch.cuda.set_device(device)
    return device


def init(info: DistInfo, device: Any) -> None:
    """Join the process group (NCCL on CUDA, gloo otherwise) and make the CPU control group."""
    if not info.enabled:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", timeout=TIMEOUT, device_id=device)
        else:
            dist.init_process_group(backend="gloo", timeout=TIMEOUT)
    if "group" not in _control:
        gloo = dist.get_backend() == "gloo"
        _control["group"] = None if gloo else dist.new_group(backend="gloo", timeout=TIMEOUT)


def _group() -> Any:
    return _control.get("group")


def barrier(info: DistInfo) -> None:
    """Wait for every rank (over the CPU group: no accelerator synchronization)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier(group=_group())


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` (anything picklable) on every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=_group())
    return box[0]


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj, group=_group())
    return out


def any_rank(info: DistInfo, flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (a CPU all-reduce)."""
    if not info.enabled:
        return flag
    import torch
    import torch.distributed as dist

    box = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(box, op=dist.ReduceOp.MAX, group=_group())
    return bool(box.item())


class StopVote:
    """Whether any rank asked to stop, agreed without a blocking round trip per step.

    Each call starts an asynchronous all-reduce (MAX over the CPU group) of this rank's flag and
    returns the outcome of the previous call's, which finished in the background during the step
    between. Every rank calls it equally often, so all of them see the same outcome at the same
    call and stop at the same step: one step after the signal, instead of paying a collective's
    latency on every step. Without torchrun it is the flag itself.
    """

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self._pending: tuple[Any, Any] | None = None

    def __call__(self, flag: bool) -> bool:
        if not self.info.enabled:
            return flag
        import torch
        import torch.distributed as dist

        agreed = False
        if self._pending is not None:
            work, box = self._pending
            work.wait()
            agreed = bool(box.item())  # a CPU tensor: no accelerator involved
        box = torch.tensor([1 if flag else 0], dtype=torch.int32)
        work = dist.all_reduce(box, op=dist.ReduceOp.MAX, group=_group(), async_op=True)
        self._pending = (work, box)
        return agreed


def _group_for(tensor: Any) -> Any:
    """CPU tensors go over the gloo control group, accelerator tensors over the main group."""
    return _group() if tensor.device.type == "cpu" else None


def all_reduce_sum(info: DistInfo, tensor: Any) -> Any:
    """Sum ``tensor`` over ranks in place (CPU or accelerator tensors alike)."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=_group_for(tensor))
    return tensor


def all_reduce_mean(info: DistInfo, tensor: Any) -> Any:
    """Average ``tensor`` over ranks in place."""
    if info.enabled:
        all_reduce_sum(info, tensor)
        tensor.div_(info.world_size)
    return tensor


def mean_over_ranks(info: DistInfo, values: dict[str, Any]) -> dict[str, float]:
    """Scalars (numbers or 0-d tensors) averaged over ranks, with one all-reduce, as floats.

    For per-rank means of equally sized local batches this is the global batch's mean, which is
    what a single process would have logged. Call it on every rank (it is a collective).
    """
    import torch

    if not values:
        return {}
    device = next((v.device for v in values.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    parts = [
        torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v, dtype=torch.float64)
        .reshape(())
        .to(device)
        for v in values.values()
    ]
    stacked = all_reduce_mean(info, torch.stack(parts))
    return dict(zip(values, stacked.tolist(), strict=True))


def sync_buffers(info: DistInfo, module: Any) -> None:
    """Copy rank 0's floating-point buffers (BatchNorm statistics) to every rank, in place.

    DDP broadcasts buffers *before* each forward, so after a training step every rank holds
    running statistics of its own share of the batch. Call this (on every rank) before
    evaluating, checkpointing or checking ranks are in sync: all ranks then hold the network
    rank 0 writes, and a resumed run continues from exactly what the uninterrupted one had.
    """
    if not info.enabled:
        return
    import torch
    import torch.distributed as dist

    groups: dict[tuple[Any, Any], list[Any]] = {}
    for buf in module.buffers():
        if buf.is_floating_point() and buf.numel():
            groups.setdefault((buf.dtype, buf.device), []).append(buf)
    for bufs in groups.values():
        flat = torch.cat([b.detach().reshape(-1) for b in bufs])
        dist.broadcast(flat, src=0, group=_group_for(flat))
        for buf, part in zip(bufs, flat.split([b.numel() for b in bufs]), strict=True):
            buf.copy_(part.view_as(buf))


def gather_rows(info: DistInfo, tensor: Any) -> Any:
    """Every rank's ``tensor`` stacked on the CPU, shape ``(world_size, *tensor.shape)``.

    For per-rank accumulators (running sums of a partial epoch) that a checkpoint must keep
    for every rank: rank 0 writes the checkpoint, so it needs the others' values.
    """
    import torch

    rows = gather_objects(info, tensor.detach().cpu())
    return torch.stack(rows)


def take_row(info: DistInfo, rows: Any) -> Any:
    """This rank's row of :func:`gather_rows` output (a resumed run's accumulator).

    A 1-D tensor is a single process's row. When the number of ranks changed since the
    checkpoint, rank 0 takes the sum of the rows and the others start from zero, so the
    rank-summed total is preserved.
    """
    if rows.ndim == 1:
        rows = rows.unsqueeze(0)
    if rows.shape[0] == info.world_size:
        return rows[info.rank].clone()
    return rows.sum(0) if info.is_main else rows[0].new_zeros(rows.shape[1:])


def gather_global_batch(tensor: Any) -> Any:
    """The global batch whose strided share :func:`rank_share` gave this rank ``tensor``.

    For plugins (SSL algorithms) that update state from each batch: gathering the rank shares
    back into the global batch's order makes every rank update the same state with the same
    samples, as one process would. Without an initialized process group (one process) it returns
    ``tensor`` itself. Collective: every rank must call it, with shares of equal size. No gradient.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    tensor = tensor.detach().contiguous()
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor, group=_group_for(tensor))
    return torch.stack(parts, dim=1).reshape(-1, *tensor.shape[1:])  # row j*W + r is rank r's row j


def rank_share(items: Any, info: DistInfo) -> Any:
    """This rank's strided share ``items[rank::world_size]`` of a global batch (any sliceable)."""
    if not info.enabled:
        return items
    return items[info.rank :: info.world_size]


def local_batch_size(global_batch: int, info: DistInfo, key: str = "batch_size") -> int:
    """``global_batch / world_size``, or an error naming the recipe key when it does not divide."""
    if global_batch % info.world_size:
        raise UserError(
            f"{key} = {global_batch} does not split over {info.world_size} processes; set it to a "
            f"multiple of {info.world_size} (--set {key}=...)"
        )
    return global_batch // info.world_size


def work_rounds(items: list[Any], info: DistInfo) -> list[Any | None]:
    """This rank's share of ``items`` padded with ``None`` to the same length on every rank.

    Work split across ranks (pool shards) is done in rounds; padding keeps the number of rounds,
    and so the number of collectives (stop polls) each rank makes, equal: no rank waits forever.
    """
    share = list(rank_share(list(items), info))
    rounds = -(-len(items) // info.world_size) if items else 0
    return share + [None] * (rounds - len(share))


def state_digest(module: Any) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes): equal iff bit-equal."""
    import torch

    h = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        data = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        if data.numel():
            h.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def verify_in_sync(info: DistInfo, module: Any, where: str) -> str:
    """Check that every rank holds bit-identical parameters and buffers; return the digest.

    Data-parallel ranks that silently diverge (a rank-dependent re-draw, an unsynchronized
    buffer) would otherwise train N different networks and report rank 0's. Call it on every
    rank; it costs one pass over the weights and a gather of 64-character strings.
    """
    digest = state_digest(module)
    digests = gather_objects(info, digest)
    if len(set(digests)) > 1:
        odd = [r for r, d in enumerate(digests) if d != digests[0]]
        raise RunFailure(
            f"data-parallel ranks diverged at {where}: rank(s) {odd} hold different weights than rank 0; "
            "a rank-dependent random draw or an unsynchronized buffer is the usual cause (docs/scale.md)"
        )
    return digest


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _control.clear()
