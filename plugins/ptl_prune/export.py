"""``ptl export RUN --format pt|safetensors|ticket [--verify]`` for prune runs.

``pt`` and ``safetensors`` hold the plain state dict of the *unwrapped* architecture with the masks
applied (loadable with ``torch.load(..., weights_only=True)`` / ``safetensors.torch.load_file``
into the model the ``arch`` entry names); ``ticket`` is the compact form of :mod:`ptl_prune.ticket`.
``--verify`` loads what was written with plain torch, rebuilds the network and checks it against
the trained one: bit-identical tensors and identical outputs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptl_cli.errors import UserError

FORMATS = ("pt", "safetensors", "ticket")
MASKED_FORMAT = "ptl-masked-model/1"


def load_trained(run: Any) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The trained (wrapped) model of a finished run, its pruner and its architecture."""
    from ptl_prune.build import build_model, build_pruner

    path = run.path / "final.pt"
    if not path.is_file():
        status = run.info().get("status")
        raise UserError(
            f"run {run.path} has no final model (status: {status}); finish it with `ptl resume {run.path}`"
        )
    final = torch.load(path, map_location="cpu", weights_only=True)
    pruner = build_pruner(final["recipe"])
    model = pruner.prepare(build_model(final["arch"]), final["seed"])
    model.load_state_dict(final["model"])
    pruner.load_state_dict(final["pruner"])
    return model.eval(), pruner, final["arch"]


def export_run(run: Any, fmt: str, out: str | None, verify: bool) -> list[str]:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)} for prune runs")
    model, pruner, arch = load_trained(run)
    dense = pruner.export_dense(model)
    dense_bytes = len(_safetensors_bytes(dense, arch))
    default = {"pt": "model.pt", "safetensors": "model.safetensors", "ticket": "ticket.safetensors"}[fmt]
    path = Path(out) if out else run.path / default
    lines: list[str] = []
    if fmt == "ticket":
        if not hasattr(pruner, "ticket_config"):
            raise UserError(
                f"--format ticket needs a score-only method (edge-popup, iterand); this run used "
                f"{getattr(pruner, 'method', '?')!r}, whose trained weights a seed cannot rebuild: use pt"
            )
        from ptl_prune.ticket import make_ticket, save_ticket

        tensors, meta = make_ticket(model, pruner, arch)
        save_ticket(path, tensors, meta)
        size = path.stat().st_size
        events = len(meta["events"])
        draws = f"{events} re-draw{'' if events == 1 else 's'}"
        lines.append(f"wrote {path}: ticket {_human(size)} (seed + 1-bit masks + {draws})")
        lines.append(
            f"dense masked weights: {_human(dense_bytes)} as safetensors; the ticket is "
            f"{dense_bytes / size:.1f}× smaller"
        )
    else:
        from ptl_cli import atomic

        if fmt == "pt":
            buffer = io.BytesIO()
            torch.save({"format": MASKED_FORMAT, "arch": arch, "state_dict": dense}, buffer)
            atomic.write_bytes(path, buffer.getvalue())
        else:
            atomic.write_bytes(path, _safetensors_bytes(dense, arch))
        lines.append(
            f"wrote {path}: {_human(path.stat().st_size)} ({fmt}, masks applied, unwrapped {arch['model']})"
        )
    if verify:
        lines.append(_verify(path, fmt, model, dense, arch))
    return lines


def load_masked_model(path: str | Path) -> nn.Module:
    """A plain network from a ``pt`` or ``safetensors`` export (what ``--verify`` checks)."""
    from ptl_prune.build import build_model

    path = Path(path)
    if _is_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as fh:
            arch = json.loads((fh.metadata() or {})["ptl_arch"])
        state = load_file(str(path))
    else:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        arch, state = blob["arch"], blob["state_dict"]
    model = build_model(arch)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header length (8 bytes) and a JSON object."""
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def _verify(path: Path, fmt: str, trained: nn.Module, dense: dict[str, torch.Tensor], arch: dict) -> str:
    if fmt == "ticket":
        from ptl_prune.ticket import load_ticket, rebuild_state_dict

        rebuilt, _ = rebuild_state_dict(path)
        plain = load_ticket(path)
    else:
        plain = load_masked_model(path)
        rebuilt = plain.state_dict()
    different = [k for k in dense if k not in rebuilt or not bit_equal(dense[k], rebuilt[k])]
    extra = [k for k in rebuilt if k not in dense]
    if different or extra:
        raise UserError(f"verify failed: {path} differs from the trained model in {(different + extra)[:5]}")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, arch["in_channels"], arch["image_size"], arch["image_size"], generator=gen)
    with torch.no_grad():
        same = torch.equal(trained(x), plain(x))
    if not same:
        raise UserError(f"verify failed: the network rebuilt from {path} computes different outputs")
    return f"verified: {len(dense)} tensors bit-identical to the trained model, identical outputs"


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so -0.0 differs from 0.0 and NaNs compare by payload)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if a.numel() == 0:
        return True
    return torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


def _safetensors_bytes(state: dict[str, torch.Tensor], arch: dict) -> bytes:
    from safetensors.torch import save

    plain = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return save(plain, metadata={"ptl_arch": json.dumps(arch), "format": MASKED_FORMAT})


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
