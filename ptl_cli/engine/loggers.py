"""Experiment loggers (TensorBoard, MLflow, W&B, a plugin's own): copies of what a run records.

``metrics.jsonl`` stays the source of truth; loggers (``[compute] log = ["tensorboard"]`` or
``--log``) receive, on rank 0 only, the resolved recipe as hyperparameters when the run starts,
every record :meth:`ptl_cli.engine.context.RunContext.log` writes, the report's PNGs when the run
ends, and ``close()``. A logger that fails is switched off for the rest of the run with one
warning: a tracking server down or a full disk never costs the run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Keys of a metrics record that are its position, not a measurement.
POSITION_KEYS = ("step", "stage", "time")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; lists become their text (trackers
    take scalars and strings as hyperparameters)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif value is None:
            continue
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def scalars(record: dict[str, Any]) -> tuple[dict[str, float], int]:
    """A metrics record as ``({"stage/key": value}, step)``: finite numbers only, named after
    their stage so that each stage's curve is its own series (stages restart their steps)."""
    stage = record.get("stage")
    step = record.get("step")
    values = {}
    for key, value in record.items():
        if key in POSITION_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            continue
        values[f"{stage}/{key}" if isinstance(stage, str) and stage else key] = float(value)
    return values, int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else 0


class Loggers:
    """The loggers of one run, each call guarded (see the module docstring)."""

    def __init__(self, loggers: list[tuple[str, Any]], warn: Callable[[str], None]) -> None:
        self._active = list(loggers)
        self._warn = warn

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._active]

    @classmethod
    def start(cls, names: list[str], run: Any, resuming: bool, warn: Callable[[str], None]) -> Loggers:
        """Build each named logger for ``run`` and give it the run's resolved recipe."""
        from ptl_cli import plugins

        built = []
        for name in names:
            try:
                spec = plugins.get("loggers", name)
                built.append((name, spec.build(str(run.path), run.path.name, resuming)))
            except Exception as exc:  # noqa: BLE001 - a logger never stops the run
                warn(f"logger {name!r} is off for this run: {_short(exc)} (metrics.jsonl has everything)")
        loggers = cls(built, warn)
        loggers.call("log_hyperparams", flatten(run.recipe_data()))
        return loggers

    def log(self, record: dict[str, Any]) -> None:
        values, step = scalars(record)
        if values:
            self.call("log_metrics", values, step)

    def images(self, run: Any) -> None:
        """The report's PNGs (``curves.png``, ...), by file name without ``.png``."""
        for path in sorted(Path(run.path).glob("*.png")):
            self.call("log_image", path.stem, str(path))

    def close(self) -> None:
        self.call("close")
        self._active = []

    def call(self, method: str, *args: Any) -> None:
        for entry in list(self._active):
            name, logger = entry
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a logger never stops the run
                self._active.remove(entry)
                self._warn(
                    f"logger {name!r} failed in {method}() ({_short(exc)}); it is off for the rest of "
                    "this run (metrics.jsonl has everything)"
                )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
