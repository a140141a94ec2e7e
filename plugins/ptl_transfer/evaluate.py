"""What the transfer stages measure: test accuracy, and two diagnostics of the pseudo samples.

Every measurement deals whole chunks of its data to the data-parallel ranks
(:meth:`ptl_transfer.job.Job.my_chunks`) and sums the counts, so it equals a single process's.
"""

from __future__ import annotations

from typing import Any

import torch

from ptl_cli.data.base import normalize, to_float
from ptl_cli.engine import distributed
from ptl_transfer import nets, pcs
from ptl_transfer.pool import PoolData

#: Above this share of pseudo samples in one target class, a run warns that PCS collapsed: the
#: far quickstart pair gives 1.0 (every garment is a "shirt"), the covered pair 0.2-0.3.
COLLAPSE_SHARE = 0.8


def target_accuracy(job: Any, model: torch.nn.Module) -> float:
    """The share of the target's test split ``model`` classifies correctly."""
    from ptl_transfer.target import batches

    t = job.target
    data = batches(t.test, 256, job.recipe.compute.workers, indices=job.my_chunks(len(t.test)))
    counts = nets.count_correct(model, data, t.info.mean, t.info.std, job.device, job.ctx.precision)
    total = distributed.all_reduce_sum(job.ctx.dist, torch.tensor(counts, dtype=torch.float64))
    correct, seen = total.tolist()
    return correct / max(1.0, seen)


@torch.no_grad()
def pcs_agreement(job: Any, data: PoolData, limit: int = 2000) -> float:
    """How often ``C_s`` classifies a pseudo sample as its soft label's top class (a sanity check)."""
    counts = torch.zeros(2, dtype=torch.float64)  # agreeing, seen
    index = job.my_chunks(min(limit, len(data)))
    if index.numel():
        batch = data.gather(index)
        logits = pcs.classify(job.sources.classifier, batch["images"], job.device)
        counts += torch.tensor([float((logits.argmax(1) == batch["soft"].argmax(1)).sum()), index.numel()])
    agree, seen = distributed.all_reduce_sum(job.ctx.dist, counts).tolist()
    return agree / max(1.0, seen)


@torch.no_grad()
def pseudo_label_shares(job: Any, model: torch.nn.Module, pool: PoolData, limit: int = 2000) -> list[float]:
    """The share of pseudo samples the final model puts in each target class.

    A diagnostic for P-SSL: when the source classes resemble only one target class, every pseudo
    sample lands there (share ~1.0) and the unlabeled loss teaches little.
    """
    from ptl_cli.engine.compute import host_to_device
    from ptl_cli.engine.sync import host_sync

    t = job.target
    images = pool.gather(job.my_chunks(min(limit, len(pool))))["images"]
    counts = torch.zeros(t.num_classes, dtype=torch.float64, device=job.device)
    model.eval()
    for chunk in images.split(256):
        x = normalize(to_float(host_to_device(chunk, job.device)), t.info.mean, t.info.std)
        with job.ctx.precision.autocast():
            predicted = model(x).argmax(1)
        # a fixed-size count on the device (bincount's output size depends on the values)
        counts.index_add_(0, predicted, torch.ones_like(predicted, dtype=counts.dtype))
    with host_sync("evaluation result"):
        counts = distributed.all_reduce_sum(job.ctx.dist, counts).cpu()
    return [round(float(c), 4) for c in counts / counts.sum()]


def collapse_warning(stage: str, shares: list[float], class_names: tuple[str, ...]) -> str | None:
    """One line when the final model puts more than ``COLLAPSE_SHARE`` of the pseudo samples in
    one target class: the source then covers only that class, and P-SSL has little to teach."""
    top = max(range(len(shares)), key=shares.__getitem__)
    if shares[top] <= COLLAPSE_SHARE:
        return None
    name = class_names[top] if top < len(class_names) else str(top)
    return f"{stage}: pseudo labels collapsed onto {name} ({shares[top]:.0%} of the pool)"
