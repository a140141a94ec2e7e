"""The ``biggan`` generator: BigGAN(-deep) weights behind the ptl ``Generator`` contract.

``weights`` selects what to load:

* ``"bundled"`` — the small BigGAN-style model trained by ``recipes/source/biggan-fashion04``
  on Fashion-MNIST classes 0–4 (package data);
* a ``.safetensors`` file written by ``ptl train-source generator --kind biggan`` (or exported);
* a local directory with ``config.json`` and ``pytorch_model.bin`` or ``model.safetensors``
  (the published BigGAN-deep layout);
* ``biggan-deep-128|256|512``: the published checkpoints, at the URLs where they were released
  (the ones ``pytorch-pretrained-biggan`` downloads), cached in ``<ptl cache>/biggan/NAME/`` as
  ``config.json`` + ``pytorch_model.bin`` — the directory an offline user can fill by hand;
* any Hugging Face hub id ``org/name`` with that layout (e.g. ``osanseviero/BigGAN-deep-128``,
  a copy of the published 128 checkpoint), taken from the hub cache or downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ptl_cli.errors import UserError
from ptl_generators import bundled
from ptl_generators import weights as W
from ptl_generators.biggan import BigGAN, BigGANConfig, truncated_noise
from ptl_generators.conditioning import as_probs, default_class_names

FORMAT = "biggan"
#: where the converted BigGAN-deep checkpoints were published: ``{base}-config.json`` and
#: ``{base}-pytorch_model.bin`` (the URLs ``pytorch-pretrained-biggan`` downloads from)
PUBLISHED = {
    f"biggan-deep-{r}": f"https://s3.amazonaws.com/models.huggingface.co/biggan/biggan-deep-{r}"
    for r in (128, 256, 512)
}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class BigGANGenerator:
    """Samples ``G(ψ·z, y)`` with truncated-normal ``z``; images in [0, 1]."""

    def __init__(
        self,
        net: BigGAN,
        device: torch.device,
        truncation: float,
        class_names: tuple[str, ...],
        source: str,
        weights_digest: str,
    ) -> None:
        self.net = net.to(device).eval()
        self.device = device
        self.truncation = float(truncation)
        cfg = net.config
        self.num_classes = cfg.num_classes
        self.image_size = cfg.image_size
        self.channels = cfg.out_channels
        self.latent_dim = cfg.z_dim
        self.class_names = class_names
        self.source = source
        self._digest = weights_digest

    @property
    def id(self) -> str:
        """``biggan-<weights digest>-t<ψ>``: ψ changes the samples, so it is part of the id."""
        return f"biggan-{self._digest}-t{self.truncation:g}"

    def noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latents as :meth:`sample` draws them: ``ψ ·`` truncated normal on [-2, 2]."""
        return truncated_noise(batch, self.latent_dim, self.truncation, generator, self.device)

    @torch.no_grad()
    def sample(
        self, y: torch.Tensor, z: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] for class indices ``(B,)`` or probabilities ``(B, K)``.

        ``z`` is the latent ``(B, latent_dim)`` *after* truncation scaling (as :meth:`noise` gives).
        """
        probs = as_probs(y, self.num_classes, self.device)
        if z is None:
            z = self.noise(probs.shape[0], generator)
        elif tuple(z.shape) != (probs.shape[0], self.latent_dim):
            raise UserError(f"z must have shape ({probs.shape[0]}, {self.latent_dim}), got {tuple(z.shape)}")
        images = self.net(z.to(self.device, torch.float32), probs, self.truncation)
        return images.add(1).mul_(0.5).clamp_(0, 1)


def load_single(path: Path) -> tuple[BigGAN, dict[str, Any]]:
    """A model from a ptl single-file BigGAN (config in the metadata), loaded strictly."""
    state, meta = W.read_single(path, FORMAT)
    config = BigGANConfig.from_dict(meta["config"])
    net = BigGAN(config)
    W.strict_load(net, state, str(path))
    return net, meta


def load_directory(directory: Path) -> tuple[BigGAN, list[Path]]:
    """A model from ``config.json`` + weights (the published BigGAN-deep layout), strictly."""
    config_path = directory / "config.json"
    found = [directory / name for name in _WEIGHT_FILES if (directory / name).is_file()]
    if not config_path.is_file() or not found:
        raise UserError(
            f"{directory} is not a BigGAN directory: it needs config.json and one of "
            f"{', '.join(_WEIGHT_FILES)}"
        )
    try:
        config = BigGANConfig.from_json(config_path.read_text())
    except (ValueError, TypeError) as exc:
        raise UserError(f"{config_path}: not a BigGAN config ({exc})") from None
    net = BigGAN(config)
    W.strict_load(net, W.read_state_dict(found[0]), str(found[0]))
    return net, [config_path, found[0]]


def resolve(weights: str) -> tuple[BigGAN, list[Path], tuple[str, ...] | None, str]:
    """(model, files, class names if known, description) for a ``weights`` value."""
    if bundled.is_bundled(weights):
        path = bundled.path("biggan", weights)
        net, meta = load_single(path)
        return net, [path], tuple(meta.get("class_names") or ()), f"bundled {bundled.name_of(weights)} BigGAN"
    path = Path(weights).expanduser()
    if path.is_file():
        net, meta = load_single(path)
        return net, [path], tuple(meta.get("class_names") or ()), str(path)
    if path.is_dir():
        net, files = load_directory(path)
        names_file = path / "class_names.json"  # written by `ptl export --format dir`
        names = tuple(json.loads(names_file.read_text())) if names_file.is_file() else None
        return net, files, names, str(path)
    if weights in PUBLISHED:
        net, files = load_directory(published_directory(weights))
        return net, files, None, weights
    if weights.count("/") == 1 and not weights.startswith((".", "/", "~")):
        local = W.hub_snapshot(
            weights,
            "biggan weights",
            allow_patterns=["config.json", *_WEIGHT_FILES],
            fix="pass weights=DIR with config.json and pytorch_model.bin",
        )
        net, files = load_directory(local)
        return net, files, None, weights
    raise UserError(
        f"biggan weights {weights!r}: no such file or directory, and not a hub id; use 'bundled', "
        "a .safetensors file, a directory with config.json + pytorch_model.bin, a hub id (org/name), "
        f"or one of {sorted(PUBLISHED)}"
    )


def published_directory(name: str) -> Path:
    """``<ptl cache>/biggan/NAME`` with the published ``config.json`` + ``pytorch_model.bin``.

    Files already there are used as they are (so an offline machine can be given them by hand);
    missing ones are downloaded when online. Either way :func:`load_directory` then loads them
    strictly, so a wrong or truncated file is an error, not a partial model.
    """
    from ptl_cli.data.locations import cache_dir

    directory = cache_dir() / "biggan" / name
    base = PUBLISHED[name]
    urls = {"config.json": f"{base}-config.json", "pytorch_model.bin": f"{base}-pytorch_model.bin"}
    fix = (
        f"where there is internet download {' and '.join(urls.values())} into {directory}/ as "
        f"{' and '.join(urls)}, or pass weights=DIR with those two files"
    )
    for filename, url in urls.items():
        W.cached_url(url, directory / filename, f"biggan weights {name!r}", str(directory), fix)
    return directory


def build(device: Any = "cpu", weights: str = "bundled", truncation: float = 1.0) -> BigGANGenerator:
    """The ``biggan`` factory."""
    net, files, names, source = resolve(weights)
    if not 0 < truncation <= 1:
        raise UserError(f"biggan: truncation must be in (0, 1], got {truncation}")
    class_names = default_class_names(net.config.num_classes, names)
    return BigGANGenerator(net, torch.device(device), truncation, class_names, source, W.digest(files))
