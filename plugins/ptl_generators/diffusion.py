"""The ``diffusers`` generator: class-conditional UNet2DModel (own-trained) or DiT, DDIM sampling.

Sampling is a short explicit DDIM loop (diffusers' ``DDIMScheduler``), with classifier-free
guidance when the model has a null class (the bundled DDPM: class ``K``; DiT: class 1000).

Soft conditioning: a model's class-embedding table ``E`` (``nn.Embedding``) is swapped, on that
model instance only, for a :class:`MixableEmbedding` sharing the same weight. It looks up integer
labels as before and maps float rows ``p`` to ``p @ E.weight`` — the probability-weighted mix of
class embeddings, fed exactly where the looked-up embedding would go. State-dict keys do not
change and no global state is patched.

``z`` is the initial noise ``x_T`` of shape ``(B, *latent_shape)``: ``(B, C, H, W)`` at image
resolution for the UNet, ``(B, 4, H/8, W/8)`` VAE latents for DiT. ``latent_dim`` is its size
``C·H·W``. Given ``z`` and ``eta = 0`` sampling is deterministic; with ``eta > 0`` each DDIM step
also draws noise (from ``generator``, so a seeded generator still reproduces the samples). ``eta``
defaults to what the model file records (the bundled DDPM: 1, see its model card), else 0.

``weights``: ``"bundled"``; a ptl ``ddpm`` .safetensors file (``ptl train-source generator --kind
ddpm``); a local diffusers directory (a pipeline with ``unet/`` or ``transformer/`` + ``vae/`` +
``scheduler/``, or one model directory); or a hub id such as ``facebook/DiT-XL-2-256``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.engine.compute import host_to_device
from ptl_cli.errors import UserError
from ptl_generators import bundled
from ptl_generators import weights as W
from ptl_generators.conditioning import as_probs, default_class_names

FORMAT = "ddpm"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_MODEL_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
DEFAULT_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
}


class MixableEmbedding(nn.Embedding):
    """An embedding table that also accepts probability rows: ``p (B, N) -> p @ weight``."""

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        if labels.is_floating_point():
            if labels.shape[-1] != self.num_embeddings:
                raise ValueError(
                    f"probability rows need {self.num_embeddings} columns, got {labels.shape[-1]}"
                )
            return labels.to(self.weight.dtype) @ self.weight
        return super().forward(labels)


def make_mixable(table: nn.Embedding) -> MixableEmbedding:
    """A :class:`MixableEmbedding` sharing ``table``'s weight (same parameter, same state-dict key)."""
    mixable = MixableEmbedding(table.num_embeddings, table.embedding_dim, _weight=table.weight)
    mixable.weight = table.weight
    return mixable


class DiffusionGenerator:
    """DDIM sampling from a class-conditional denoiser ``eps(x_t, t, class)``."""

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        scheduler_config: dict[str, Any],
        num_classes: int,
        null_class: int | None,
        class_names: tuple[str, ...],
        latent_shape: tuple[int, int, int],
        device: torch.device,
        steps: int,
        guidance_scale: float,
        eta: float,
        dtype: torch.dtype,
        digest: str,
        vae: nn.Module | None = None,
        patch: int = 1,
        channels: int | None = None,
        image_size: int | None = None,
    ) -> None:
        # cast only when asked: diffusers warns about any dtype-changing .to() call
        self.model = (model.to(device) if dtype == torch.float32 else model.to(device, dtype)).eval()
        self.vae = None
        if vae is not None:
            self.vae = (vae.to(device) if dtype == torch.float32 else vae.to(device, dtype)).eval()
        self.arch = arch
        self.scheduler_config = dict(scheduler_config)
        self.num_classes = num_classes
        self.null_class = null_class
        self.class_names = class_names
        self.latent_shape = latent_shape
        self.latent_dim = latent_shape[0] * latent_shape[1] * latent_shape[2]
        self.channels = channels or latent_shape[0]
        self.image_size = image_size or latent_shape[1]
        self.device = device
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.eta = eta
        self.dtype = dtype
        self.patch = patch
        self._digest = digest
        self.table_size = self._install_mixable()

    @property
    def id(self) -> str:
        """Weights digest plus the sampling settings that change the samples."""
        return f"diffusers-{self._digest}-s{self.steps}-g{self.guidance_scale:g}-e{self.eta:g}"

    def _install_mixable(self) -> int:
        """Swap this instance's class-embedding table(s) for mixable ones; return the table size."""
        if self.arch == "unet":
            table = self.model.class_embedding
            if not isinstance(table, nn.Embedding):
                raise UserError(
                    "this UNet2DModel is not class-conditional (it has no num_class_embeds table)"
                )
            self.model.class_embedding = make_mixable(table)
            return table.num_embeddings
        size = 0
        for module in self.model.modules():
            embedder = getattr(module, "class_embedder", None)
            if embedder is not None and isinstance(embedder.embedding_table, nn.Embedding):
                embedder.embedding_table = make_mixable(embedder.embedding_table)
                size = embedder.embedding_table.num_embeddings
        if not size:
            raise UserError("this DiT model has no class-label embedding to condition on")
        return size

    def _rows(self, probs: torch.Tensor) -> torch.Tensor:
        """Probability rows over the classes, padded with a zero null-class column if there is one."""
        if self.table_size > probs.shape[1]:
            probs = F.pad(probs, (0, self.table_size - probs.shape[1]))
        return probs.to(self.dtype)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, rows: torch.Tensor, guided: bool) -> torch.Tensor:
        if guided:
            null = torch.zeros_like(rows)
            null[:, self.null_class] = 1
            x_in, rows_in = torch.cat([x, x]), torch.cat([rows, null])
        else:
            x_in, rows_in = x, rows
        if self.arch == "unet":
            out = self.model(x_in, t, class_labels=rows_in).sample
        else:
            timestep = t.expand(x_in.shape[0]).to(self.device)
            out = self.model(x_in, timestep=timestep, class_labels=rows_in).sample
            out = out[:, : x.shape[1]]  # DiT also predicts variances (learned sigma): keep eps
        if not guided:
            return out
        cond, uncond = out.chunk(2)
        return uncond + self.guidance_scale * (cond - uncond)

    def noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        return torch.randn((batch, *self.latent_shape), generator=generator, device=gen_device).to(
            self.device
        )

    @torch.no_grad()
    def sample(
        self, y: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1]; ``z`` is the initial noise ``(B, *latent_shape)``."""
        from diffusers import DDIMScheduler

        probs = as_probs(y, self.num_classes, self.device)
        batch = probs.shape[0]
        if z is None:
            z = self.noise(batch, generator)
        elif tuple(z.shape) != (batch, *self.latent_shape):
            raise UserError(f"z must have shape {(batch, *self.latent_shape)}, got {tuple(z.shape)}")
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        # The timesteps stay on the host, where the scheduler's arithmetic reads them (on the
        # device each step's comparisons would wait for the GPU); the model gets a device copy.
        scheduler.set_timesteps(self.steps)
        timesteps = host_to_device(scheduler.timesteps, self.device)
        x = z.to(self.device, self.dtype) * scheduler.init_noise_sigma
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)
        rows = self._rows(probs)
        has_null = self.null_class is not None and self.null_class < self.table_size
        guided = has_null and self.guidance_scale != 1.0
        for i, t in enumerate(scheduler.timesteps):
            eps = self._eps(x, timesteps[i], rows, guided)
            x = scheduler.step(eps, t, x, eta=self.eta, generator=generator).prev_sample
        if self.patch > 1:
            x = F.pixel_shuffle(x, self.patch)
        if self.vae is not None:
            x = self.vae.decode(x / self.vae.config.scaling_factor).sample
        return x.float().add(1).mul_(0.5).clamp_(0, 1)


# -- loading -----------------------------------------------------------------------------------------
def _model_weights(directory: Path) -> Path | list[Path]:
    for name in _MODEL_FILES:
        if (directory / name).is_file():
            return directory / name
    index = directory / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [directory / s for s in shards]
    raise UserError(f"{directory} has no diffusers weights ({' or '.join(_MODEL_FILES)})")


def load_model(directory: Path, expect: tuple[str, ...]) -> tuple[nn.Module, list[Path]]:
    """A diffusers model from ``config.json`` + weights, loaded strictly (no silent random init)."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel, UNet2DModel

    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"{directory} is not a diffusers model directory (no config.json)")
    config = json.loads(config_path.read_text())
    name = config.get("_class_name", "")
    if name == "Transformer2DModel" and config.get("norm_type") == "ada_norm_zero":
        name = "DiTTransformer2DModel"  # how older diffusers saved DiT
    classes = {
        "UNet2DModel": UNet2DModel,
        "DiTTransformer2DModel": DiTTransformer2DModel,
        "AutoencoderKL": AutoencoderKL,
    }
    if name not in classes or name not in expect:
        raise UserError(
            f"{config_path}: model class {name!r} is not supported here (expected {' or '.join(expect)})"
        )
    cls = classes[name]
    known = set(cls.extract_init_dict(config)[0]) if hasattr(cls, "extract_init_dict") else None
    init = {k: v for k, v in config.items() if not k.startswith("_") and (known is None or k in known)}
    model = cls.from_config(init)
    files = _model_weights(directory)
    paths = files if isinstance(files, list) else [files]
    state: dict[str, Any] = {}
    for path in paths:
        state.update(W.read_state_dict(path))
    W.strict_load(model, _renamed_legacy_keys(model, state), str(directory))
    return model, [config_path, *paths]


def _renamed_legacy_keys(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """Checkpoints saved before diffusers 0.15 name attention weights ``query/key/value/proj_attn``.

    Many hub models still ship that way (the Stable Diffusion VAE that DiT decodes with, older
    ``UNet2DModel`` uploads). diffusers renames them on load (``_fix_state_dict_keys_on_load``:
    ``to_q/to_k/to_v/to_out.0``, same tensors); ptl applies the same documented renaming before
    its strict load, so those files load while anything else that does not match stays an error.
    """
    fix = getattr(model, "_fix_state_dict_keys_on_load", None)
    return fix(dict(state)) if callable(fix) else state


def _has_weights(directory: Path) -> bool:
    """Whether every model directory of this (pipeline) directory has a weights file."""
    parts = [directory / sub for sub in ("unet", "transformer", "vae") if (directory / sub).is_dir()]
    for part in parts or [directory]:
        names = [*_MODEL_FILES, "diffusion_pytorch_model.safetensors.index.json"]
        if not any((part / name).is_file() for name in names):
            return False
    return True


def _scheduler_config(directory: Path | None) -> dict[str, Any]:
    if directory is not None and (directory / "scheduler_config.json").is_file():
        config = json.loads((directory / "scheduler_config.json").read_text())
        return {k: v for k, v in config.items() if not k.startswith("_")}
    return dict(DEFAULT_SCHEDULER)


def load_directory(directory: Path) -> dict[str, Any]:
    """Parts of a pipeline directory (``unet/`` or ``transformer/`` + ``vae/``) or one model dir."""
    if (directory / "transformer").is_dir():
        model, files = load_model(directory / "transformer", ("DiTTransformer2DModel",))
        vae, vae_files = load_model(directory / "vae", ("AutoencoderKL",))
        return {
            "model": model,
            "arch": "dit",
            "vae": vae,
            "files": files + vae_files,
            "scheduler": _scheduler_config(directory / "scheduler"),
        }
    if (directory / "unet").is_dir():
        model, files = load_model(directory / "unet", ("UNet2DModel",))
        parts = {
            "model": model,
            "arch": "unet",
            "files": files,
            "scheduler": _scheduler_config(directory / "scheduler"),
        }
        sidecar = directory / "ptl.json"  # from `ptl export --format dir`: what diffusers has no field for
        if sidecar.is_file():
            parts.update(json.loads(sidecar.read_text()))
        return parts
    model, files = load_model(directory, ("UNet2DModel",))
    return {"model": model, "arch": "unet", "files": files, "scheduler": _scheduler_config(directory)}


def load_single(path: Path) -> dict[str, Any]:
    """The ptl single-file DDPM: UNet config, scheduler, patch and class names in the metadata."""
    from diffusers import UNet2DModel

    state, meta = W.read_single(path, FORMAT)
    model = UNet2DModel.from_config(meta["unet"])
    W.strict_load(model, state, str(path))
    return {
        "model": model,
        "arch": "unet",
        "files": [path],
        "scheduler": meta["scheduler"],
        "patch": int(meta.get("patch", 1)),
        "null_class": meta.get("null_class"),
        "class_names": meta.get("class_names"),
        "channels": meta.get("channels"),
        "image_size": meta.get("image_size"),
        "eta": (meta.get("sampling") or {}).get("eta"),
    }


def resolve(weights: str) -> dict[str, Any]:
    if bundled.is_bundled(weights):
        return load_single(bundled.path("ddpm", weights))
    path = Path(weights).expanduser()
    if path.is_file():
        return load_single(path)
    if path.is_dir():
        return load_directory(path)
    if weights.count("/") == 1 and not weights.startswith((".", "/", "~")):
        fix = "pass weights=DIR holding the diffusers directory"
        local = W.hub_snapshot(
            weights, "diffusers weights", allow_patterns=["*.json", "*.safetensors"], fix=fix
        )
        if not _has_weights(local):  # a repository with .bin files only: fetch those instead
            local = W.hub_snapshot(
                weights, "diffusers weights", allow_patterns=["*.json", "*.bin"], fix=fix, cache_first=False
            )
        return load_directory(local)
    raise UserError(
        f"diffusers weights {weights!r}: no such file or directory, and not a hub id; use 'bundled', a "
        ".safetensors file from `ptl train-source`, a diffusers directory, or a hub id like "
        "facebook/DiT-XL-2-256"
    )


def build(
    device: Any = "cpu",
    weights: str = "bundled",
    steps: int = 25,
    guidance_scale: float = 2.0,
    eta: float | None = None,
    dtype: str = "float32",
) -> DiffusionGenerator:
    """The ``diffusers`` factory. ``eta=None``: the value the model file records, else 0 (DDIM)."""
    parts = resolve(weights)
    if eta is None:
        eta = float(parts.get("eta") or 0.0)
    model = parts["model"]
    if parts["arch"] == "unet":
        cfg = model.config
        table = cfg.num_class_embeds
        if not table:
            raise UserError(
                f"{weights}: the UNet2DModel has no class embedding (num_class_embeds); it is unconditional"
            )
        null = parts.get("null_class")
        num_classes = null if null is not None else table
        patch = int(parts.get("patch", 1))
        size = int(cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0])
        latent = (cfg.in_channels // patch**2, size * patch, size * patch)
    else:
        cfg = model.config
        num_classes = int(cfg.num_embeds_ada_norm)
        null = num_classes  # DiT's label embedding has one extra row, the CFG null class
        patch = 1
        latent = (cfg.in_channels, cfg.sample_size, cfg.sample_size)
    vae = parts.get("vae")
    factor = 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 1
    channels = parts.get("channels") or (vae.config.out_channels if vae is not None else latent[0])
    image_size = parts.get("image_size") or latent[1] * factor
    return DiffusionGenerator(
        model,
        parts["arch"],
        parts["scheduler"],
        int(num_classes),
        null,
        default_class_names(int(num_classes), parts.get("class_names")),
        latent,
        torch.device(device),
        steps,
        guidance_scale,
        eta,
        _DTYPES[dtype],
        W.digest(parts["files"]),
        vae=vae,
        patch=patch,
        channels=channels,
        image_size=image_size,
    )
