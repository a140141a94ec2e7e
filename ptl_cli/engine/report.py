"""The run report: the results (title, tables, notes) on the terminal and in ``report.md``, and
training curves (PNG).

A workflow gives its results either as one table (``results_table(run) -> (header, rows)``) or,
when a reader needs more to read them right, as :class:`Results` (``results(run)``): a title that
says what was compared, several tables (a transfer run's stages apart from the phases they
share) and notes under them (what the numbers can and cannot say).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
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


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]
    caption: str = ""  # a heading above it ("shared phases"), none for the main table


@dataclass
class Results:
    """What a finished run reports: ``title`` (may hold a second line), tables, notes under them."""

    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def results_of(workflow: Any, run: Any) -> Results:
    """The workflow's :class:`Results`, or its one ``results_table`` under the run's path."""
    if hasattr(workflow, "results"):
        return workflow.results(run)
    header, rows = workflow.results_table(run)
    return Results(title=f"results: {run.path}", tables=[Table(header, rows)])


def print_results(console: Any, results: Results) -> None:
    """The tables as rich tables, the first under the title, each note on its own line."""
    from rich.table import Table as RichTable

    before = console.width
    if not console.is_terminal:  # rich assumes 80 columns there; a log file reads better wider
        console.width = max(before, 120)
    try:
        for index, table in enumerate(results.tables):
            title = results.title if index == 0 else table.caption
            shown = RichTable(title=title, title_justify="left")
            for column in table.header:
                shown.add_column(column, overflow="fold")
            for row in table.rows:
                shown.add_row(*(format_cell(c) for c in row))
            console.print(shown)
    finally:
        console.width = before
    for note in results.notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)  # commands stay whole


def write_report(run: Any, results: Results) -> None:
    """``RUN/report.md``: the run's name and status, the results, and the curves when there are any."""
    info = run.info()
    text = f"# {info.get('name') or info['kind']} ({info['kind']})\n\n"
    text += f"status: {info['status']}\n\n"
    for index, table in enumerate(results.tables):
        heading = results.title if index == 0 else table.caption
        if heading:
            text += "\n".join(
                f"**{line}**  " if i == 0 else f"{line}  " for i, line in enumerate(heading.splitlines())
            )
            text += "\n\n"
        text += markdown_table(table.header, table.rows) + "\n"
    text += "".join(f"{note}\n\n" for note in results.notes)
    if plot_curves(run.metrics(), run.path / "curves.png"):
        text += "![training curves](curves.png)\n"
    atomic.write_text(run.path / "report.md", text)


def curve_series(records: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metric -> stage -> (step, value) points, keeping only metrics that make a curve somewhere.

    A value logged once per stage (a pool's sample count and seconds, a stage's final test
    accuracy) is a single dot per panel on a meaningless axis: such metrics are left out (the
    results table has them)."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        x = rec.get("step")
        if x is None:
            continue
        stage = str(rec.get("stage", ""))
        for key, value in rec.items():
            if key in ("step", "epoch", "stage", "time") or isinstance(value, bool):
                continue
            if isinstance(value, int | float):
                series[key][stage].append((float(x), float(value)))
    return {
        name: dict(by_stage)
        for name, by_stage in series.items()
        if any(len(points) > 1 for points in by_stage.values())
    }


def plot_curves(records: list[dict[str, Any]], out: Path) -> bool:
    """One panel per metric, one line per stage; False when there is nothing to plot."""
    series = curve_series(records)
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
            if len(points) < 2:
                continue  # a lone dot among curves (a stage's final value) adds nothing readable
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=stage or None, marker="." if len(xs) < 30 else None)
        only = list(series[name])
        ax.set_title(f"{name} ({only[0]})" if len(only) == 1 and only[0] else name)  # whose curve
        ax.set_xlabel("step")
        if len(series[name]) > 1 and any(series[name].keys()):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return True
