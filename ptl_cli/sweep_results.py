"""Aggregating runs: a sweep's mean ± std over seeds per grid point, and runs side by side.

Final metrics are read from each run exactly as ``ptl runs show --json`` prints them
(:func:`ptl_cli.launch.run_summary`); curves come from ``metrics.jsonl``, the source of truth.
The spread is the sample standard deviation over seeds (``ddof=1``; 0 for a single seed).
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

from ptl_cli.errors import UserError

#: Shown first in tables when present; every numeric final metric goes into the CSV and JSON.
HEADLINE = ("test_acc", "sparsity", "best_val_acc")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def aggregate(sweep: Any) -> dict[str, Any]:
    """Per grid point: seeds completed, and mean/std/values of every numeric final metric."""
    from ptl_cli.launch import run_summary
    from ptl_cli.runs import Run

    keys = list(sweep.spec["grid"])
    groups: dict[str, dict[str, Any]] = {}
    for cell in sweep.cells:
        label = repr([cell.point[k] for k in keys])
        group = groups.setdefault(label, {"point": cell.point, "cells": [], "values": {}})
        group["cells"].append({"id": cell.id, "seed": cell.seed, "status": cell.status})
        if cell.status != "completed":
            continue
        metrics = run_summary(Run(sweep.run_dir(cell)))["metrics"]
        for name, value in metrics.items():
            number = _number(value)
            if number is not None:
                group["values"].setdefault(name, []).append(number)
    rows = []
    for group in groups.values():
        stats = {
            name: {
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "n": len(values),
                "values": values,
            }
            for name, values in group["values"].items()
        }
        completed = sum(c["status"] == "completed" for c in group["cells"])
        rows.append(
            {"point": group["point"], "completed": completed, "cells": group["cells"], "metrics": stats}
        )
    seen = list(dict.fromkeys(m for r in rows for m in r["metrics"]))  # in the workflow's order
    names = [m for m in HEADLINE if m in seen] + [m for m in seen if m not in HEADLINE]
    return {
        "path": str(sweep.path),
        "grid": sweep.spec["grid"],
        "seeds": sweep.spec["seeds"],
        "metrics": names,
        "rows": rows,
    }


def write_csv(sweep: Any, result: dict[str, Any]) -> Path:
    """``SWEEP/results.csv``: one row per grid point, ``<metric>_mean`` and ``<metric>_std`` columns."""
    from ptl_cli import atomic

    keys = list(result["grid"])
    header = [*keys, "seeds_completed"]
    for name in result["metrics"]:
        header += [f"{name}_mean", f"{name}_std"]
    lines = []
    for row in result["rows"]:
        cells = [row["point"][k] for k in keys] + [row["completed"]]
        for name in result["metrics"]:
            stat = row["metrics"].get(name)
            cells += [stat["mean"], stat["std"]] if stat else ["", ""]
        lines.append(cells)
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(lines)
    path = Path(sweep.path) / "results.csv"
    atomic.write_text(path, buffer.getvalue())
    return path


def _numeric(values: list[Any]) -> bool:
    return all(_number(v) is not None for v in values)


def plot_axes(grid: dict[str, list[Any]], x: str | None, hue: str | None) -> tuple[str | None, str | None]:
    """The x axis (given, else the first numeric grid key, else the first key) and the hue."""
    keys = list(grid)
    for given, flag in ((x, "--x"), (hue, "--hue")):
        if given is not None and given not in grid:
            from ptl_cli.errors import did_you_mean

            raise UserError(f"{flag} {given!r} is not a grid key of this sweep; {did_you_mean(given, keys)}")
    if x is None and keys:
        x = next((k for k in keys if _numeric(grid[k])), keys[0])
    if hue is None:
        hue = next((k for k in keys if k != x), None)
    return x, hue


def accuracies(result: dict[str, Any]) -> list[str]:
    """The final metrics that are test accuracies (``test_acc``, or one per stage: ``pp_test_acc``)."""
    return [m for m in result["metrics"] if m == "test_acc" or m.endswith("_test_acc")]


def default_metric(result: dict[str, Any]) -> str:
    """``test_acc``, else the last stage's test accuracy (workflows report stages in order)."""
    found = accuracies(result)
    return "test_acc" if "test_acc" in found else (found[-1] if found else "test_acc")


def write_plot(
    sweep: Any, result: dict[str, Any], metric: str | None, x: str | None, hue: str | None
) -> Path | None:
    """``SWEEP/<metric>.png``: mean ± std of ``metric`` against grid key ``x``, a line per ``hue``
    value (the other grid keys, if any, split lines further). None when nothing completed."""
    x, hue = plot_axes(result["grid"], x, hue)
    metric = metric or default_metric(result)
    rows = [r for r in result["rows"] if metric in r["metrics"]]
    if not rows:
        if result["rows"] and any(r["metrics"] for r in result["rows"]) and metric not in result["metrics"]:
            from ptl_cli.errors import did_you_mean

            hint = did_you_mean(metric, result["metrics"])
            raise UserError(f"--metric {metric!r}: the runs have no such final metric; {hint}")
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in result["grid"] if k not in (x, hue)]
    lines: dict[str, list[tuple[Any, float, float]]] = {}
    for row in rows:
        label = ", ".join(f"{k}={row['point'][k]}" for k in ([hue] if hue else []) + others) or metric
        xv = row["point"][x] if x else 0
        stat = row["metrics"][metric]
        lines.setdefault(label, []).append((xv, stat["mean"], stat["std"]))
    numeric_x = x is not None and _numeric(result["grid"][x])
    order = {repr(v): i for i, v in enumerate(result["grid"][x])} if x else {}  # values may be lists
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        points.sort(key=lambda p: p[0] if numeric_x else order.get(repr(p[0]), 0))
        xs = [p[0] if numeric_x else str(p[0]) for p in points]
        ax.errorbar(
            xs, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", capsize=3, label=label
        )
    ax.set_xlabel(x or "")
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.set_title(Path(sweep.path).name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(sweep.path) / f"{metric}.png"
    save_png(fig, path)
    plt.close(fig)
    return path


def save_png(fig: Any, path: Path) -> None:
    """Write a figure atomically (a reader never sees half a PNG)."""
    import io

    from ptl_cli import atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic.write_bytes(path, buffer.getvalue())


def format_stat(stat: dict[str, Any] | None) -> str:
    if not stat:
        return ""
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}" if stat["n"] > 1 else f"{stat['mean']:.4f}"


def print_table(sweep: Any, result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    keys = list(result["grid"])
    headline = [m for m in result["metrics"] if m in HEADLINE]
    shown = list(dict.fromkeys(headline + accuracies(result)))[:6] or result["metrics"][:3]
    table = Table(title=f"sweep {sweep.path} ({sweep.kind}): mean ± std over seeds")
    for column in (*keys, "seeds", *shown):
        table.add_column(column)
    for row in result["rows"]:
        seeds = f"{row['completed']}/{len(row['cells'])}"
        table.add_row(
            *(str(row["point"][k]) for k in keys), seeds, *(format_stat(row["metrics"].get(m)) for m in shown)
        )
    Console(highlight=False).print(table)


# -- runs compare ---------------------------------------------------------------------------------
def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


CURVE_SKIP = {"step", "epoch", "time"}


def curves(run: Any) -> dict[str, list[tuple[float, float]]]:
    """``stage/key`` (or ``key``) -> [(step, value)] from a run's ``metrics.jsonl``."""
    out: dict[str, list[tuple[float, float]]] = {}
    for index, record in enumerate(run.metrics()):
        step = _number(record.get("step"))
        stage = record.get("stage")
        for key, value in record.items():
            number = _number(value)
            if key in CURVE_SKIP or number is None:
                continue
            name = f"{stage}/{key}" if isinstance(stage, str) else key
            out.setdefault(name, []).append((step if step is not None else float(index), number))
    return out


def compare_runs(refs: list[str], plot: str | None, force: bool = False) -> dict[str, Any]:
    """Final metrics and differing recipe keys of each run, and a PNG of their overlaid curves.

    The plot's path is checked first: never a run's file, an existing file only with ``force``.
    """
    from ptl_cli import outputs, provenance
    from ptl_cli.launch import run_summary
    from ptl_cli.runs import Run

    if len(refs) < 1:
        raise UserError("ptl runs compare needs at least one run")
    if plot:
        outputs.check_new_file(Path(plot), "--plot", force=force)
    runs = [Run.open(r) for r in refs]
    summaries = [run_summary(r) for r in runs]
    flats = [_flatten(s["recipe"]) for s in summaries]
    keys = sorted(set().union(*flats))
    differing = {k: [f.get(k) for f in flats] for k in keys if len({repr(f.get(k)) for f in flats}) > 1}
    metric_names = sorted({m for s in summaries for m, v in s["metrics"].items() if _number(v) is not None},
                          key=lambda m: (m not in HEADLINE, m))  # fmt: skip
    result: dict[str, Any] = {
        "runs": [{"path": s["path"], "kind": s["kind"], "status": s["status"]} for s in summaries],
        "metrics": {m: [s["metrics"].get(m) for s in summaries] for m in metric_names},
        "recipe_differences": differing,
        "provenance_differences": provenance.differences([s.get("provenance") or {} for s in summaries]),
        "plot": None,
    }
    if plot:
        result["plot"] = str(_plot_curves(runs, [s["path"] for s in summaries], Path(plot)))
    return result


def _plot_curves(runs: list[Any], labels: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_run = [curves(r) for r in runs]
    names = sorted(set().union(*per_run))
    names = [
        n for n in names if sum(len(c.get(n, [])) for c in per_run) > len(runs)
    ] or names  # curves, not points
    names = names[:9]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    short = [Path(label).name for label in labels]
    for ax, name in zip(axes.flat, names, strict=False):
        for label, run_curves in zip(short, per_run, strict=False):
            points = run_curves.get(name, [])
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    marker="." if len(points) < 30 else None,
                    label=label,
                )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if names:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)
    return path


def print_comparison(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="runs compared")
    table.add_column("")
    for run in result["runs"]:
        table.add_column(Path(run["path"]).name, overflow="fold")
    table.add_row("status", *(r["status"] for r in result["runs"]))
    for name, values in result["metrics"].items():
        table.add_row(
            name, *("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in values)
        )
    for key, values in result["recipe_differences"].items():
        table.add_row(f"[dim]{key}[/]", *("" if v is None else str(v) for v in values))
    differs = result.get("provenance_differences", {})
    if differs:  # other software or hardware: numbers may differ for that reason alone
        table.add_section()
        for key, values in differs.items():
            table.add_row(f"[yellow]made by: {key}[/]", *("" if v is None else str(v) for v in values))
    console = Console(highlight=False)
    console.print(table)
    if differs:
        facts = ", ".join(differs)
        console.print(f"[yellow]note:[/] these runs were made by different software or hardware ({facts})")
    if result["plot"]:
        console.print(f"curves: {result['plot']}")
