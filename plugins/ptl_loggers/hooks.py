"""Registers the built-in loggers; the trackers' packages are imported only by the factories."""

from __future__ import annotations

from typing import Any

from ptl_cli import hookimpl


@hookimpl
def ptl_register_loggers(register: Any) -> None:
    register(
        "tensorboard",
        "ptl_loggers.tensorboard_logger:TensorBoardLogger",
        description="TensorBoard event files in RUN/tensorboard (scalars, recipe as hparams, report PNGs)",
        requires="tensorboard",
        extra="tensorboard",
    )
    register(
        "mlflow",
        "ptl_loggers.mlflow_logger:MLflowLogger",
        description="MLflow: a file store in RUN/mlruns unless MLFLOW_TRACKING_URI is set",
        requires="mlflow",
        extra="mlflow",
    )
    register(
        "wandb",
        "ptl_loggers.wandb_logger:WandbLogger",
        description="Weights & Biases, offline in RUN/wandb unless WANDB_MODE=online",
        requires="wandb",
        extra="wandb",
    )
