"""``ptl export RUN --format dir``: a trained source model in its ecosystem's own layout.

* BigGAN -> ``config.json`` + ``model.safetensors``: the published BigGAN-deep layout, which
  ``weights=DIR`` (and any loader of those checkpoints that accepts safetensors) reads;
* DDPM -> a diffusers directory: ``unet/`` (``save_pretrained``), ``scheduler/`` (DDIM) and
  ``ptl.json`` (null class, class names, pixel-unshuffle factor: what diffusers has no field for);
* classifier -> ``model.safetensors`` + ``config.json`` (arch, size, normalization, class names).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ptl_cli import atomic
from ptl_cli.errors import RunFailure, UserError
from ptl_generators import weights as W

SIDE_CAR = "ptl.json"


def export_directory(source: Path, target: Path) -> list[str]:
    tensors, meta = W.read_single(source)
    fmt = meta.get("ptl_format")
    target.mkdir(parents=True, exist_ok=True)
    if fmt == "biggan":
        atomic.write_text(target / "config.json", json.dumps(meta["config"], indent=2) + "\n")
        W.save_single(target / "model.safetensors", tensors, {"format": "pt"})
        atomic.write_text(target / "class_names.json", json.dumps(meta.get("class_names", [])) + "\n")
    elif fmt == "ddpm":
        from diffusers import DDIMScheduler, UNet2DModel

        unet = UNet2DModel.from_config(meta["unet"])
        W.strict_load(unet, tensors, str(source))
        unet.save_pretrained(target / "unet", safe_serialization=True)
        DDIMScheduler.from_config(meta["scheduler"]).save_pretrained(target / "scheduler")
        extra = {
            k: meta[k] for k in ("patch", "null_class", "class_names", "channels", "image_size") if k in meta
        }
        if (meta.get("sampling") or {}).get("eta") is not None:
            extra["eta"] = meta["sampling"]["eta"]  # the model's DDIM eta default
        atomic.write_text(target / SIDE_CAR, json.dumps(extra, indent=2) + "\n")
    elif fmt == "classifier":
        atomic.write_bytes(target / "model.safetensors", source.read_bytes())
        config = {k: v for k, v in meta.items() if k not in ("recipe", "ptl_run")}
        atomic.write_text(target / "config.json", json.dumps(config, indent=2) + "\n")
    else:
        raise UserError(f"{source}: unknown model format {fmt!r}")
    return [f"wrote {target}/ ({fmt}; load it with weights={target})"]


def verify_export(source: Path, target: Path) -> str:
    """Rebuild from the export and check it gives exactly what the run's model gives."""
    _, meta = W.read_single(source)
    fmt = meta.get("ptl_format")
    if fmt == "classifier":
        from ptl_generators.classifiers import checkpoint

        file = target / "model.safetensors" if target.is_dir() else target
        x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        a, b = checkpoint("cpu", path=str(source))(x), checkpoint("cpu", path=str(file))(x)
    else:
        if fmt == "biggan":
            from ptl_generators.biggan_generator import build
        else:
            from ptl_generators.diffusion import build
        gen_a, gen_b = build("cpu", weights=str(source)), build("cpu", weights=str(target))
        y = torch.arange(4) % gen_a.num_classes
        a = gen_a.sample(y, generator=torch.Generator().manual_seed(0))
        b = gen_b.sample(y, generator=torch.Generator().manual_seed(0))
    if not torch.equal(a, b):
        raise RunFailure(
            f"export {target} differs from the run's model (max |Δ| {float((a - b).abs().max()):.3g})"
        )
    return f"verified: {target} reproduces the run's model exactly"
