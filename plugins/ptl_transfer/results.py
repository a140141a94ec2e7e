"""What a finished transfer run reports and leaves behind: its final metrics, ``RUN/model.pt``,
and the results a reader sees (:func:`results`: what was compared, the stages apart from the
phases they share, and what one seed can and cannot say).

Kept free of torch: ``ptl runs show`` renders the results without loading it.
"""

from __future__ import annotations

from typing import Any

from ptl_cli import atomic
from ptl_cli.engine.progress import format_duration
from ptl_cli.engine.report import Results, Table
from ptl_transfer import stages
from ptl_transfer.stages import metric_key

#: Below this margin (in accuracy, 0.03 = 3 points) between the best stage and the next, a single
#: seed says nothing: on the quickstart one seed's accuracies move by up to 3.6 points with the
#: order of float reductions alone (docs/measured.md), and seed-to-seed spreads are ~2 points.
SEED_NOISE = 0.03
SHARED = ("pp-pool", "pp-pretrain", "pcs-pool")


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


# -- what a reader sees ---------------------------------------------------------------------------
def table(run: Any) -> tuple[list[str], list[list[Any]]]:
    """One row per phase that ran, in execution order: a stage's test accuracy and gain over
    scratch, and every phase's seconds (the pools and PP pre-training the stages share too),
    then their total: where the run's time went. The machine-readable form of :func:`results`."""
    metrics = run.info().get("metrics", {})
    header = ["stage", "method", "test_acc", "vs scratch", "seconds"]
    rows = []
    base = metrics.get("scratch_test_acc")
    total = 0.0
    for name in stages.PHASES:
        seconds = metrics.get(metric_key(name, "seconds"))
        if name in stages.STAGES:
            acc = metrics.get(metric_key(name))
            if acc is None:  # a stage the recipe did not ask for
                continue
            delta = f"{acc - base:+.4f}" if base is not None and name != "scratch" else ""
            rows.append([name, stages.DESCRIPTIONS[name], acc, delta, seconds])
        elif seconds is not None:  # a phase the stages share: no accuracy of its own
            rows.append([name, stages.DESCRIPTIONS[name], "", "", seconds])
        else:
            continue
        total += seconds or 0.0
    if rows:
        rows.append(["total", _total_label(run), "", "", round(total, 3)])
    return header, rows


def results(run: Any) -> Results:
    """The table a reader who has not read the paper understands: a title naming what was
    compared, the stages (accuracy, gain over scratch, time), the shared phases apart (time only),
    times as ``1m 56s``, and one honest line on what a single seed can say."""
    info = run.info()
    metrics = info.get("metrics", {})
    recipe = run.recipe_data()
    accuracy = {n: metrics[metric_key(n)] for n in stages.STAGES if metric_key(n) in metrics}
    base = accuracy.get("scratch")
    ssl = recipe.get("ssl", {}).get("name", "?")
    rows = []
    for name, acc in accuracy.items():
        delta = "" if base is None or name == "scratch" else f"{100 * (acc - base):+.1f}"
        rows.append([name, stages.describe(name, ssl), _percent(acc), delta, _time(metrics, name)])
    header = ["stage", "what it trains on", "test accuracy", "vs scratch (points)", "time"]
    tables = [Table(header, rows)]
    shared = [[n, stages.DESCRIPTIONS[n], _shared_time(metrics, n)] for n in SHARED if _time(metrics, n)]
    seconds = sum(float(metrics.get(metric_key(n, "seconds"), 0.0)) for n in stages.PHASES)
    shared.append(["total", _total_label(run), format_duration(seconds)])
    tables.append(Table(["phase", "what it does", "time"], shared, caption="phases the stages share"))
    return Results(title=_title(recipe, metrics), tables=tables, notes=_verdict(run, accuracy))


def _title(recipe: dict[str, Any], metrics: dict[str, Any]) -> str:
    source, target, model = recipe.get("source", {}), recipe.get("target", {}), recipe.get("model", {})
    generator = source.get("generator", {}).get("name", "?")
    classifier = source.get("classifier", {}).get("name", "?")
    classes = len(target.get("classes") or []) or "all"
    per_class = target.get("labels_per_class")
    labels = f"{per_class} labels per class" if per_class else "all labels"
    arch = model.get("name", "?")
    width = model.get("width", 1.0)
    arch += f" (width {width:g})" if width != 1.0 else ""
    return (
        f"Transfer to {target.get('dataset', '?')} ({classes} classes, {labels}; "
        f"{metrics.get('labeled', '?')} labeled images), {arch}, seed {recipe.get('seed', '?')}\n"
        f"source models: generator {generator}, classifier {classifier}; "
        f"SSL algorithm {recipe.get('ssl', {}).get('name', '?')}"
    )


def _verdict(run: Any, accuracy: dict[str, float]) -> list[str]:
    """Which stage is best and by how much, and whether one seed can tell."""
    if len(accuracy) < 2:
        return []
    ranked = sorted(accuracy.items(), key=lambda item: -item[1])
    top = ranked[0][1]
    leaders = [name for name, acc in ranked if 100 * (top - acc) < 0.05]  # equal as printed
    if len(leaders) == 1:
        line = f"Best: {leaders[0]} at {_percent(top)}"
    else:
        line = f"Best: {' and '.join(leaders)}, tied at {_percent(top)}"
    rest = ranked[len(leaders) :]
    if rest:
        line += f", {100 * (top - rest[0][1]):.1f} points above {rest[0][0]}"
    if "scratch" in accuracy and "scratch" not in leaders and (not rest or rest[0][0] != "scratch"):
        line += f" and {100 * (top - accuracy['scratch']):+.1f} over scratch"
    if not rest or top - rest[0][1] < SEED_NOISE:
        line += (
            ". One seed cannot separate differences of this size: changing only the seed, or the "
            "CPU's float kernels, moves these accuracies by a few points. Mean ± std over 5 seeds:"
        )
    else:
        line += ". This is one seed; how much it moves with the seed (mean ± std over 5 seeds):"
    sweep = f"{run.path.name}-seeds"
    command = f"ptl sweep --recipe {run.path}/recipe.toml --seeds 0,1,2,3,4 --out {sweep}"
    return [line, f"  {command} && ptl sweep show {sweep}"]


def _percent(acc: float) -> str:
    return f"{100 * acc:.1f}%"


def _time(metrics: dict[str, Any], name: str) -> str:
    seconds = metrics.get(metric_key(name, "seconds"))
    return format_duration(float(seconds)) if seconds is not None else ""


def _shared_time(metrics: dict[str, Any], name: str) -> str:
    """A phase's time, saying when a pool cost nothing because an earlier run had made it: a pool
    opened in under 0.05 s came from the cache (generating even the quickstart's 1,280 look-alikes
    takes seconds), and "0.0s" beside "generate images" would read as a fault."""
    seconds = metrics.get(metric_key(name, "seconds"))
    if name.endswith("-pool") and seconds is not None and float(seconds) < 0.05:
        return "cached"
    return _time(metrics, name)


def _total_label(run: Any) -> str:
    """Say when the phases' seconds overlapped: stages side by side take less wall time than their sum."""
    from ptl_transfer.lanes import saved_plan

    plan = saved_plan(run.path)
    if plan is None:
        return "all phases"
    return f"all phases, summed ({len(plan['lanes'])} processes side by side: less wall time)"
