"""Finding and loading source-model weights: bundled files, local paths, published URLs, the hub.

Three rules hold for every model this plugin loads:

* **strict**: a state dict with missing, unexpected or mis-shaped tensors is a :class:`UserError`
  naming them, never a silent partial load;
* **offline is an answer, not a hang**: hub and URL files come from a local cache first, through
  the core's :mod:`ptl_cli.downloads` (``hub_snapshot``, ``cached_url``, re-exported here), and
  offline without them the one-line error says what is missing, where and how to provide it;
* **single-file format**: models ptl trains are one ``.safetensors`` file whose metadata holds
  the JSON config (``ptl_format``, ``config``, ``class_names``...), so a bundled model, a
  ``ptl train-source`` result and its export are the same kind of file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Re-exported: this plugin's modules reach the download rules as ``weights.hub_snapshot`` etc.
from ptl_cli.downloads import cached_url as cached_url
from ptl_cli.downloads import hf_cache_dir as hf_cache_dir
from ptl_cli.downloads import hub_snapshot as hub_snapshot
from ptl_cli.downloads import offline as offline
from ptl_cli.errors import UserError

DATA_DIR = Path(__file__).resolve().parent / "data"


def bundled(filename: str) -> Path:
    """A file shipped in ``ptl_generators/data``; a clear error if the package lacks it."""
    path = DATA_DIR / filename
    if not path.is_file():
        raise UserError(
            f"bundled model file {path} is missing from the installed package; reinstall ptl, or "
            "rebuild it with `ptl train-source` and the recipes in recipes/source/"
        )
    return path


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors from ``.safetensors`` or a torch file (``weights_only``; unwraps ``state_dict``)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a corrupt or foreign file
        raise UserError(f"{path} is not a readable weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise UserError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return state


def strict_load(module: Any, state: Mapping[str, Any], where: str) -> None:
    """``module.load_state_dict(state)``, with missing/unexpected/mis-shaped keys as one error."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    for label, items in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatch", shapes),
    ):
        if items:
            shown = ", ".join(items[:4]) + (f" (+{len(items) - 4} more)" if len(items) > 4 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise UserError(
            f"{where} does not match the model it should load into ({'; '.join(problems)}); check "
            "that the file and its config belong together"
        )
    module.load_state_dict(state, strict=True)


def save_single(path: Path, state: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Write tensors + JSON-able metadata as one ``.safetensors`` file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=text)
    os.chmod(tmp, 0o644)  # model files are meant to be shared, like package data
    os.replace(tmp, path)


def read_single(path: Path, expect_format: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Tensors and decoded metadata of a ptl single-file model; checks ``ptl_format``."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as exc:  # noqa: BLE001 - header/IO errors of a corrupt file
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from None
    meta: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value)
        except json.JSONDecodeError:
            meta[key] = value
    fmt = meta.get("ptl_format")
    if expect_format and fmt != expect_format:
        got = f"a {fmt!r} model" if fmt else "not a ptl model file (no ptl_format metadata)"
        raise UserError(f"{path} is {got}; expected a {expect_format!r} model")
    return tensors, meta


def digest(paths: Iterable[Path], extra: str = "") -> str:
    """A short content digest of weight files (first/last 4 MiB + size for big files)."""
    h = hashlib.sha256(extra.encode())
    chunk = 4 << 20
    for path in sorted(Path(p) for p in paths):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with path.open("rb") as fh:
            if size <= 4 * chunk:
                h.update(fh.read())
            else:
                h.update(fh.read(chunk))
                fh.seek(size - chunk)
                h.update(fh.read(chunk))
    return h.hexdigest()[:12]
