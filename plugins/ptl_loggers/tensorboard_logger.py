"""TensorBoard through ``torch.utils.tensorboard``: event files in ``RUN/tensorboard``.

``tensorboard --logdir RUN/tensorboard`` (or a folder of runs) shows them. The recipe goes in
as TensorBoard hparams (the HParams tab) and as a text table; the report's PNGs as images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TensorBoardLogger:
    def __init__(self, run_dir: str, run_id: str, resuming: bool) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run appends a new event file to the same folder: TensorBoard merges them
        self.log_dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        experiment, start, end = hparams(params, {})
        writer = self.writer._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary)
        rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("recipe", f"| key | value |\n|---|---|\n{rows}")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_image(self, name: str, path: str) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(f"report/{name}", pixels, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
