"""Source classifiers ``C_s``: networks with their own preprocessing, giving ``K_s`` logits.

Every factory returns a :class:`SourceClassifier` in eval mode. It accepts float images in [0, 1]
of any size with 1 or 3 channels and applies the network's preprocessing itself (channel
matching, resize, normalization), so callers never need to know what the network expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ptl_cli.data.augment import match_channels, resize
from ptl_cli.data.base import normalize
from ptl_cli.errors import UserError
from ptl_generators import weights as W
from ptl_generators.conditioning import default_class_names

FORMAT = "classifier"


class SourceClassifier(nn.Module):
    """A network plus its preprocessing: ``forward(images01) -> logits``."""

    def __init__(
        self,
        net: nn.Module,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str],
        classifier_id: str,
    ) -> None:
        super().__init__()
        self.net = net
        self.image_size = image_size
        self.channels = channels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self._id = classifier_id
        self.eval()

    @property
    def id(self) -> str:
        return self._id

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = match_channels(images, self.channels)
        x = resize(x, self.image_size)
        return normalize(x, self.mean, self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        param = next(self.net.parameters())
        return self.net(self.preprocess(images.to(device=param.device, dtype=param.dtype)))


def _build_arch(
    arch: str, num_classes: int, channels: int, image_size: int, width: float, params: dict
) -> nn.Module:
    from ptl_cli import plugins

    spec = plugins.get("models", arch)
    return spec.build(
        num_classes, channels, image_size, width, params=params, where=f"classifier arch {arch}"
    )


def checkpoint(
    device: Any = "cpu",
    path: str = "",
    arch: str | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    width: float | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    class_names: list[str] | None = None,
    arch_params: dict[str, Any] | None = None,
) -> SourceClassifier:
    """A classifier from a local file: a ptl ``classifier`` .safetensors, or a state dict.

    For a ptl file every setting comes from its metadata (parameters given here override it);
    for a plain state dict ``arch``, ``num_classes``, ``image_size``, ``channels``, ``mean`` and
    ``std`` are required. Loading is strict.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"source classifier checkpoint {file} not found; pass path=FILE")
    meta: dict[str, Any] = {}
    if file.suffix == ".safetensors":
        state, meta = W.read_single(file)
        if meta.get("ptl_format") not in (None, FORMAT):
            raise UserError(f"{file} is a {meta['ptl_format']!r} model, not a classifier")
    else:
        state = W.read_state_dict(file)
    given = {
        "arch": arch,
        "num_classes": num_classes,
        "image_size": image_size,
        "channels": channels,
        "width": width,
        "mean": mean,
        "std": std,
        "class_names": class_names,
        "arch_params": arch_params or None,
    }
    settings = {**meta, **{k: v for k, v in given.items() if v is not None}}
    missing = [
        k for k in ("arch", "num_classes", "image_size", "channels", "mean", "std") if k not in settings
    ]
    if missing:
        raise UserError(
            f"source classifier {file}: the file does not record {', '.join(missing)}; pass them as "
            "parameters (e.g. --set source.params.arch=resnet18)"
        )
    net = _build_arch(
        settings["arch"],
        int(settings["num_classes"]),
        int(settings["channels"]),
        int(settings["image_size"]),
        float(settings.get("width") or 1.0),
        dict(settings.get("arch_params") or {}),
    )
    W.strict_load(net, state, str(file))
    names = default_class_names(int(settings["num_classes"]), settings.get("class_names"))
    return SourceClassifier(
        net,
        int(settings["image_size"]),
        int(settings["channels"]),
        settings["mean"],
        settings["std"],
        names,
        f"checkpoint:{settings['arch']}-{W.digest([file])}",
    ).to(device)


def bundled(device: Any = "cpu", weights: str = "fashion-coarse") -> SourceClassifier:
    """A bundled classifier: ``fashion-coarse`` (4 coarse classes of Fashion-MNIST train half A,
    ``recipes/source/classifier-fashion-coarse``) or ``fashion04`` (classes 0–4)."""
    from ptl_generators import bundled as B

    clf = checkpoint(device, path=str(B.path("classifier", f"bundled:{weights}")))
    clf._id = f"bundled-{clf.id.split('-', 1)[1]}"
    return clf


def torchvision_classifier(device: Any = "cpu", name: str = "torchvision:resnet50", weights: str = "DEFAULT"):
    """An ImageNet classifier from torchvision with its weights' own resize and normalization."""
    import torchvision.models as tvm

    arch = name.split(":", 1)[1]
    try:
        enum = tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        from ptl_cli.errors import did_you_mean

        raise UserError(
            f"unknown torchvision classifier {arch!r}; {did_you_mean(arch, tvm.list_models())}"
        ) from None
    try:
        chosen = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        known = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise UserError(f"{name}: unknown weights {weights!r}; known: {known}") from None
    file = _cached_torchvision_file(chosen.url, name)
    net = tvm.get_model(arch, weights=None, num_classes=len(chosen.meta["categories"]))
    state = torch.load(file, map_location="cpu", weights_only=True)
    W.strict_load(net, state, str(file))
    preset = chosen.transforms()
    size = int(preset.crop_size[0])
    return SourceClassifier(
        net,
        size,
        3,
        tuple(preset.mean),
        tuple(preset.std),
        chosen.meta["categories"],
        f"{name}-{chosen.name}",
    ).to(device)


def _cached_torchvision_file(url: str, name: str) -> Path:
    """torch hub's cached copy of ``url``; downloaded with a timeout when online, else an error."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    target = checkpoints / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    fix = f"download {url} where there is internet into {checkpoints}/, or use source classifier 'checkpoint'"
    W.cached_url(url, target, name, "the torch hub cache", fix)
    _check_hash_prefix(target, target.name)
    return target


def _check_hash_prefix(path: Path, filename: str) -> None:
    """torchvision file names end in the first hex digits of the file's sha256."""
    import hashlib
    import re

    match = re.search(r"-([a-f0-9]{6,})\.", filename)
    if not match:
        return
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    if not h.hexdigest().startswith(match.group(1)):
        path.unlink(missing_ok=True)
        raise UserError(f"downloaded {filename} does not match its hash; try again")
