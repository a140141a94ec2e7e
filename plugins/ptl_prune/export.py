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
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptl_cli import atomic
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
    try:
        final = torch.load(path, map_location="cpu", weights_only=True)
        final["recipe"], final["arch"], final["seed"], final["model"], final["pruner"]  # noqa: B018
    except Exception as exc:  # noqa: BLE001 - any unreadable file: named in one line
        raise UserError(
            f"{path} cannot be read ({type(exc).__name__}); the run's final model is broken"
        ) from None
    from ptl_cli import pruning

    pruner = build_pruner(final["recipe"])
    model = pruning.prepare(pruner, build_model(final["arch"]), final["seed"])
    model.load_state_dict(final["model"])
    pruner.load_state_dict(final["pruner"])
    return model.eval(), pruner, final["arch"]


def export_run(run: Any, fmt: str, out: str | None, verify: bool) -> list[str]:
    """Write the export; nothing is left behind when it fails. A ticket is always verified (rebuilt
    from the written bytes and compared bit for bit) before it is reported, and one that would not
    be smaller than the dense export is refused."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)} for prune runs")
    model, pruner, arch = load_trained(run)
    table = run.recipe_data().get("pruner", {})
    method = str(table.get("name") or table.get("method") or getattr(pruner, "method", ""))
    dense = pruner.export_dense(model)
    dense_bytes = _safetensors_bytes(dense, arch)
    default = {"pt": "model.pt", "safetensors": "model.safetensors", "ticket": "ticket.safetensors"}[fmt]
    path = Path(out) if out else run.path / default
    lines: list[str] = []
    if fmt == "ticket":
        data, meta = _ticket(model, pruner, method, dense, arch)
        if len(data) >= len(dense_bytes):
            raise UserError(
                f"pruner {method!r}: its ticket would be {_human(len(data))}, no smaller than the dense "
                f"export ({_human(len(dense_bytes))} as safetensors); nothing written: "
                "use --format safetensors"
            )
        events = len(meta["events"])
        draws = f"{events} re-draw{'' if events == 1 else 's'}"
        lines.append(f"wrote {path}: ticket {_human(len(data))} (seed + {_ticket_contents(meta)} + {draws})")
        lines.append(
            f"dense masked weights: {_human(len(dense_bytes))} as safetensors; the ticket is "
            f"{len(dense_bytes) / len(data):.1f}× smaller"
        )
        verify = True  # a ticket is only reported once it has been rebuilt and compared
    elif fmt == "pt":
        buffer = io.BytesIO()
        torch.save({"format": MASKED_FORMAT, "arch": arch, "state_dict": dense}, buffer)
        data = buffer.getvalue()
        lines.append(f"wrote {path}: {_human(len(data))} (pt, masks applied, unwrapped {arch['model']})")
    else:
        data = dense_bytes
        lines.append(
            f"wrote {path}: {_human(len(data))} (safetensors, masks applied, unwrapped {arch['model']})"
        )
    if not verify:
        atomic.write_bytes(path, data)
        return lines
    # verified exports: written beside the target, checked there, then renamed into place
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~atomic.umask())  # a plain file's mode, not mkstemp's 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        checked = _verify(tmp, fmt, model, dense, arch, method)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return lines + [checked]


def _ticket(model: nn.Module, pruner: Any, method: str, dense: dict, arch: dict) -> tuple[bytes, dict]:
    """The ticket bytes from the pruner's own declaration (``ticket_spec``), or a one-line refusal."""
    from ptl_prune.ticket import make_ticket, ticket_bytes

    declare = getattr(pruner, "ticket_spec", None)
    if not callable(declare):
        raise UserError(
            f"pruner {method!r} does not declare how to rebuild it: it has no ticket_spec(model) returning "
            "a ptl_cli.pruning.TicketSpec (docs/plugins/reference.md); export its weights with --format "
            "safetensors"
        )
    try:
        spec = declare(model)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's failure is reported as its own, in one line
        raise UserError(f"pruner {method!r}: ticket_spec(model) raised {type(exc).__name__}: {exc}") from None
    tensors, meta = make_ticket(model, spec, arch, method, dense)
    return ticket_bytes(tensors, meta), meta


def _ticket_contents(meta: dict[str, Any]) -> str:
    """What a ticket holds besides its seed and re-draws, as the export's line says it."""
    layers = meta["layers"]
    masks = "masks with levels" if any("levels" in layer for layer in layers) else "1-bit masks"
    return masks + (" + per-layer gains" if any(layer.get("gain") for layer in layers) else "")


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


def _verify(
    path: Path, fmt: str, trained: nn.Module, dense: dict[str, torch.Tensor], arch: dict, method: str = ""
) -> str:
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
        what = (
            f"the ticket pruner {method!r} declared (ticket_spec)" if fmt == "ticket" else f"the {fmt} export"
        )
        raise UserError(
            f"verify failed, nothing written: {what} does not rebuild the trained network: "
            f"{(different + extra)[:5]} differ"
        )
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, arch["in_channels"], arch["image_size"], arch["image_size"], generator=gen)
    with torch.no_grad():
        same = torch.equal(trained(x), plain(x))
    if not same:
        raise UserError(
            f"verify failed, nothing written: the network rebuilt from the {fmt} export "
            "computes different outputs"
        )
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
