"""``ptl export RUN``: the full method's final model as a standalone ``.pt`` or ``.safetensors``.

Both carry what rebuilding the network needs (architecture, width, classes, normalization);
``--verify`` rebuilds it through the model plugin from the exported file alone and checks that
every tensor equals the run's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ptl_cli import atomic, plugins
from ptl_cli.errors import UserError

FORMATS = ("pt", "safetensors")
META_KEYS = (
    "stage",
    "arch",
    "width",
    "model_params",
    "num_classes",
    "in_channels",
    "image_size",
    "class_names",
    "mean",
    "std",
)


def load_run_model(run: Any) -> dict[str, Any]:
    path = run.path / "model.pt"
    if not path.is_file():
        raise UserError(f"{run.path} has no model.pt: the run did not complete; `ptl resume {run.path}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        missing = [k for k in (*META_KEYS, "state_dict") if k not in payload]
    except Exception as exc:  # noqa: BLE001 - any unreadable file: named in one line
        raise UserError(f"{path} cannot be read ({type(exc).__name__}); the run's model is broken") from None
    if missing:
        raise UserError(f"{path} is broken: it lacks {', '.join(missing)}")
    return payload


def _stage_weights(run: Any, stage: str) -> dict[str, torch.Tensor]:
    """A trained stage's weights (target head), named in one line when it did not run or is broken."""
    from ptl_cli.errors import did_you_mean
    from ptl_transfer.stages import STAGES

    ran = [s for s in run.recipe_data().get("stages", []) if s in STAGES]
    if stage not in ran:
        hint = did_you_mean(stage, ran)
        close = f"; {hint}" if hint.startswith("did you mean") else ""
        raise UserError(f"--stage {stage!r}: this run trained {', '.join(ran)}{close}")
    path = run.path / "stages" / f"{stage.replace('+', '_')}.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - missing or unreadable: one line
        raise UserError(
            f"{path} cannot be read ({type(exc).__name__}); the stage's weights are broken"
        ) from None


def rebuild(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The network described by ``meta`` with ``state`` loaded strictly."""
    spec = plugins.get("models", meta["arch"])
    model = spec.build(
        meta["num_classes"],
        meta["in_channels"],
        meta["image_size"],
        meta["width"],
        params=meta["model_params"],
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


def export(run: Any, fmt: str, out: str | None, verify: bool, stage: str | None = None) -> list[str]:
    """The final stage's model (``RUN/model.pt``), or with ``stage`` that stage's (``RUN/stages/``)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: transfer runs export {', '.join(FORMATS)}")
    payload = load_run_model(run)
    if stage is not None and stage != payload["stage"]:
        payload = {**payload, "stage": stage, "state_dict": _stage_weights(run, stage)}
    meta = {k: payload[k] for k in META_KEYS}
    # never the run's own model.pt: the default pt export is a file of its own
    target = Path(out) if out else run.path / ("export.pt" if fmt == "pt" else f"model.{fmt}")
    if fmt == "pt":
        atomic.torch_save(payload, target)
    else:
        from safetensors.torch import save

        state = {k: v.contiguous() for k, v in payload["state_dict"].items()}
        atomic.write_bytes(target, save(state, metadata={"ptl": json.dumps(meta)}))
    chosen = "" if stage else ": the final one; --stage picks another"
    lines = [f"wrote {target} ({meta['arch']}, {meta['num_classes']} classes, stage {meta['stage']}{chosen})"]
    if verify:
        lines.append(_verify(target, fmt, payload["state_dict"]))
    return lines


def _verify(path: Path, fmt: str, expected: dict[str, torch.Tensor]) -> str:
    if fmt == "pt":
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        meta, state = {k: loaded[k] for k in META_KEYS}, loaded["state_dict"]
    else:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as fh:
            meta = json.loads(fh.metadata()["ptl"])
        state = load_file(str(path))
    model = rebuild(meta, state)
    rebuilt = model.state_dict()
    bad = [k for k, v in expected.items() if not torch.equal(rebuilt[k], v)]
    if bad:
        raise UserError(
            f"verify failed: {len(bad)} tensors differ after rebuilding from {path} (first {bad[0]})"
        )
    return f"verified: rebuilt {meta['arch']} from {path}; all {len(expected)} tensors equal"
