"""Seeding and capturing every random state, so a resumed run draws what it would have drawn."""

from __future__ import annotations

import os
import random
from typing import Any


def seed_everything(seed: int, deterministic: bool = True, cudnn_benchmark: bool | None = None) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, ask for reproducible kernels.

    ``cudnn_benchmark`` (default: ``not deterministic``) lets cuDNN time its convolution algorithms
    and keep the fastest. With ``deterministic`` too, each kernel stays deterministic, but which
    one wins the timing can differ between processes: the trade of bit-exact resume for speed.
    """
    import numpy as np
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = (not deterministic) if cudnn_benchmark is None else cudnn_benchmark


def capture_rng() -> dict[str, Any]:
    """All global RNG states as tensors and plain data (loadable with ``weights_only=True``)."""
    import torch

    state: dict[str, Any] = {
        "python": _encode_python_state(random.getstate()),
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` recorded (checkpoints without a NumPy state load too)."""
    import torch

    random.setstate(_decode_python_state(state["python"]))
    torch.set_rng_state(state["torch"])
    if state.get("numpy") is not None:
        _set_numpy_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_state() -> dict[str, Any]:
    """NumPy's legacy global RNG (``np.random.*``), as a tensor and plain numbers.

    ``seed_everything`` seeds it and third-party code (augmentation libraries, samplers) draws
    from it, so a resumed run must restore it too to draw what it would have drawn.
    """
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": str(name),
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_state(state: dict[str, Any]) -> None:
    import numpy as np

    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def _encode_python_state(state: tuple) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _decode_python_state(state: list[Any]) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def generator_for(seed: int, *salt: int, device: Any = "cpu"):
    """A fresh ``torch.Generator`` seeded from ``seed`` and salts (e.g. a step number).

    Every rank computes the same generator from the same inputs: this is how re-draws and
    sampling stay identical across data-parallel processes without communication.
    """
    import torch

    mixed = seed
    for s in salt:
        mixed = (mixed * 1_000_003 + int(s) + 0x9E3779B9) % (2**63 - 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(mixed)
    return gen
