"""What a finished transfer run reports and leaves behind: its final metrics and ``RUN/model.pt``."""

from __future__ import annotations

from typing import Any

from ptl_cli import atomic
from ptl_transfer import stages
from ptl_transfer.stages import metric_key


def final_metrics(job: Any) -> dict[str, Any]:
    """The run's metrics: each chosen stage's test accuracy, every phase's seconds (pools and PP
    pre-training included), the final stage's accuracy as ``test_acc``, and the diagnostics of the
    pools and pseudo labels. Writes ``RUN/model.pt``."""
    chosen, done = job.recipe.stages, job.done
    final = stages.final_stage(chosen)
    metrics: dict[str, Any] = {"test_acc": done[final]["test_acc"], "final_stage": final}
    for name in chosen:
        metrics[metric_key(name)] = done[name]["test_acc"]
    for name in stages.PHASES:  # the time breakdown: every phase that ran, the pools' too
        if name in done and "seconds" in done[name]:
            metrics[metric_key(name, "seconds")] = done[name]["seconds"]
    if "pcs-pool" in done and "agreement" in done["pcs-pool"]:
        metrics["pcs_agreement"] = done["pcs-pool"]["agreement"]
    if "pp-pretrain" in done:
        metrics["pp_source_train_acc"] = done["pp-pretrain"]["source_train_acc"]
    for name in ("pssl", "pp+pssl"):
        if name in chosen and "pseudo_label_max_share" in done[name]:
            metrics[metric_key(name, "pseudo_label_max_share")] = done[name]["pseudo_label_max_share"]
    metrics["labeled"] = int(job.target.images.shape[0])
    write_final_model(job, final)
    return metrics


def write_final_model(job: Any, final: str) -> None:
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
