"""Weights & Biases, offline unless asked otherwise: files in ``RUN/wandb``, nothing sent.

``WANDB_MODE=online`` (and ``WANDB_PROJECT``, ``WANDB_ENTITY``) sends the run to W&B instead;
an offline run can be uploaded later with ``wandb sync RUN/wandb/offline-run-*``. The W&B run id
is derived from the run directory, so a resumed run continues the same W&B run. Metrics carry
their ptl ``step`` as a field of their own: stages restart their steps, and W&B's own step
must only grow.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


class WandbLogger:
    def __init__(self, run_dir: str, run_id: str, resuming: bool) -> None:
        import wandb

        path = Path(run_dir).resolve()
        self.wandb = wandb
        self.run = wandb.init(
            dir=str(path),
            project=os.environ.get("WANDB_PROJECT", "ptl"),
            name=run_id,
            id=hashlib.sha1(str(path).encode()).hexdigest()[:16],
            resume="allow",
            mode=os.environ.get("WANDB_MODE", "offline"),
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.run.config.update(params, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log({**metrics, "step": step})

    def log_image(self, name: str, path: str) -> None:
        self.run.log({f"report/{name}": self.wandb.Image(path)})

    def close(self) -> None:
        self.run.finish()
