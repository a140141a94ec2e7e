"""The run report: a results table (Markdown) and training curves (PNG)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ptl_cli import atomic


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.4g}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(format_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(run: Any, header: list[str], rows: list[list[Any]]) -> None:
    info = run.info()
    text = f"# {info.get('name') or info['kind']} ({info['kind']})\n\n"
    text += f"status: {info['status']}\n\n" + markdown_table(header, rows)
    if plot_curves(run.metrics(), run.path / "curves.png"):
        text += "\n![training curves](curves.png)\n"
    atomic.write_text(run.path / "report.md", text)


def plot_curves(records: list[dict[str, Any]], out: Path) -> bool:
    """One panel per metric, one line per stage; False when there is nothing to plot."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        x = rec.get("step")
        if x is None:
            continue
        stage = str(rec.get("stage", ""))
        for key, value in rec.items():
            if key in ("step", "epoch", "stage", "time") or not isinstance(value, int | float):
                continue
            series[key][stage].append((float(x), float(value)))
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(series)[:12]
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for stage, points in sorted(series[name].items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=stage or None, marker="." if len(xs) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        if any(series[name].keys()) and len(series[name]) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return True
