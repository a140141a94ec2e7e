"""MLflow through its client: one MLflow run per ptl run, offline by default.

Without ``MLFLOW_TRACKING_URI`` the run goes to a file store in ``RUN/mlruns`` (no server, no
network; ``mlflow-skinny`` is enough); ``mlflow ui --backend-store-uri RUN/mlruns`` shows it.
With the variable set, to the server or store it names. The experiment is
``$MLFLOW_EXPERIMENT_NAME`` or ``ptl``. A resumed run continues the same MLflow run (its id is
kept in ``RUN/mlflow-run-id``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ptl_cli import atomic


class MLflowLogger:
    def __init__(self, run_dir: str, run_id: str, resuming: bool) -> None:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (Path(run_dir).resolve() / "mlruns").as_uri()
            # MLflow 3 keeps the file store in "maintenance mode" behind this switch; a database
            # store needs the full `mlflow` (SQLAlchemy): set MLFLOW_TRACKING_URI=sqlite:///...
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "ptl")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        id_file = Path(run_dir) / "mlflow-run-id"
        if resuming and id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=run_id, tags={"ptl.run_dir": str(run_dir)})
            self.run_id = run.info.run_id
            atomic.write_text(id_file, self.run_id + "\n")
        self.status = "FINISHED"

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(name, value, now, step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def log_image(self, name: str, path: str) -> None:
        self.client.log_artifact(self.run_id, path, artifact_path="report")

    def close(self) -> None:
        self.client.set_terminated(self.run_id, status=self.status)
