"""Device selection and mixed-precision policy.

``auto`` means the best device present (CUDA, then MPS, then CPU); a device asked for by name that
is not there is a :class:`UserError`, never a silent fall-back that would make a run 100x slower.
"""

from __future__ import annotations

import contextlib
from typing import Any

from ptl_cli.errors import UserError


def with_index(device: Any) -> Any:
    """``cuda`` as ``cuda:N`` (the current device); other devices as they are.

    ``torch.cuda.set_device``, streams and events refuse a bare ``cuda`` (torch 2.14), so every
    CUDA device ptl hands on carries its index.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def resolve_device(spec: str = "auto"):
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit device is an error."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return with_index("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UserError(f"--device {spec!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: CUDA is not available here; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        device = with_index(device)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {spec}: MPS is not available here; use --device cpu or auto")
    return device


class Precision:
    """Autocast and gradient scaling for ``fp32``, ``bf16-mixed`` and ``fp16-mixed``.

    On CPU, mixed precision is ignored (fp32): CPU autocast is slower for these models and the
    CPU path exists for correctness and tests.
    """

    def __init__(self, name: str, device: Any) -> None:
        import torch

        self.name = name
        self.device = device
        self.enabled = name != "fp32" and device.type == "cuda"
        if self.enabled and name == "bf16-mixed" and not torch.cuda.is_bf16_supported():
            # fail before the first step, not with an obscure kernel error inside it
            raise UserError(
                f"precision bf16-mixed needs a GPU with bfloat16 support ({device} has none); "
                "use --set compute.precision=fp16-mixed"
            )
        self.dtype = torch.bfloat16 if name == "bf16-mixed" else torch.float16
        use_scaler = self.enabled and name == "fp16-mixed"
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def autocast(self):
        import torch

        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward_and_step(self, loss, optimizer) -> None:
        """``loss.backward(); optimizer.step()`` with fp16 loss scaling where needed."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
