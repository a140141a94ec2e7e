"""Any timm architecture as a ptl model: ``timm:resnet50``, ``timm:vit_small_patch16_224``...

``timm.create_model(NAME, num_classes=K, in_chans=C, pretrained=False, **kwargs)``: random
weights unless ``pretrained=true`` is asked for (then timm's default weights for NAME, from the
Hugging Face cache first or downloaded when online — offline without them is a one-line error —,
with a fresh K-way head and the first convolution adapted to C channels, as timm does).
Supermasks need nothing special: timm's layers are ``nn.Conv2d``/``nn.Linear`` or subclasses
of them that read ``self.weight`` (``Conv2dSame``, ``StdConv2d``, timm's ``Linear``), which is
what ``ptl_prune`` parametrizes.

Small images (32×32, 28×28): ``stem="small"`` sets the first convolution's stride to 1 and
removes the stem's max-pool (timm ResNets' ``maxpool``, ByobNet/RegNet-style ``stem.pool``) —
the CIFAR stem for ResNets, EfficientNets, MobileNets, RegNets. Patchify stems (ViT, DeiT,
ConvNeXt, Swin: a convolution whose kernel equals its stride) are refused with a hint: those
models take ``kwargs = {img_size = 32, patch_size = 4}`` (ViT/DeiT) instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ptl_cli.errors import UserError


def small_stem(net: nn.Module, name: str) -> None:
    """Stride 1 in the first convolution and no stem max-pool, for 32×32-class inputs."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise UserError(f"{name}: stem='small' needs a convolutional stem; this model has no Conv2d")
    if first.stride[0] > 1 and tuple(first.kernel_size) == tuple(first.stride):
        raise UserError(
            f"{name}: stem='small' changes stride-2 convolution stems; this model's stem is a "
            f"{first.kernel_size[0]}×{first.kernel_size[0]} patchify convolution — pass "
            "params.kwargs = {img_size = 32, patch_size = 4} (ViT/DeiT) instead"
        )
    first.stride = (1, 1)
    if isinstance(getattr(net, "maxpool", None), nn.Module):
        net.maxpool = nn.Identity()
    stem = getattr(net, "stem", None)
    if isinstance(stem, nn.Module) and isinstance(getattr(stem, "pool", None), nn.Module):
        stem.pool = nn.Identity()


def pretrained_file(arch: str, name: str) -> Path:
    """The local file of timm's default pretrained weights for ``arch``: its Hugging Face hub
    repository from the cache first (downloaded when online), else its release URL into
    ``<ptl cache>/timm/``. Offline without them: the one-line error every ptl source model gives
    (timm's own loader would try the network and wait for its timeouts)."""
    from timm.models import get_pretrained_cfg

    from ptl_cli import downloads as W
    from ptl_cli.data.locations import cache_dir

    cfg = get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"{name}: timm has no pretrained weights for {arch!r}; set pretrained = false")
    if cfg.hf_hub_id:
        fix = "or set pretrained = false"
        local = W.hub_snapshot(cfg.hf_hub_id, f"{name} weights", ["*.json", "model.safetensors"], fix)
        if not (local / "model.safetensors").is_file():  # an older repository: the torch file
            local = W.hub_snapshot(
                cfg.hf_hub_id, f"{name} weights", ["*.json", "pytorch_model.bin"], fix, cache_first=False
            )
            return local / "pytorch_model.bin"
        return local / "model.safetensors"
    where = cache_dir() / "timm"
    target = where / cfg.url.rsplit("/", 1)[-1]
    fix = f"download {cfg.url} where there is internet into {where}/, or set pretrained = false"
    return W.cached_url(cfg.url, target, f"{name} weights", str(where), fix)


def build(
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 224,
    width: float = 1.0,
    name: str = "timm:resnet18",
    pretrained: bool = False,
    stem: str = "keep",
    kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    from ptl_models.timm_catalog import model_problem

    problem = model_problem(name, width)  # what the recipe's check says, too
    if problem:
        raise UserError(f"{name}: {problem}")
    import timm

    arch = name.split(":", 1)[1]
    extra: dict[str, Any] = {}
    if pretrained:
        extra["pretrained_cfg_overlay"] = {"file": str(pretrained_file(arch, name))}
    try:
        net = timm.create_model(
            arch,
            pretrained=pretrained,
            num_classes=num_classes,
            in_chans=in_channels,
            **extra,
            **(kwargs or {}),
        )
    except TypeError as exc:
        raise UserError(f"{name}: timm.create_model refused params.kwargs ({exc})") from None
    except (OSError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserError(f"{name}: timm's pretrained weights could not be loaded ({reason})") from None
    if stem == "small":
        small_stem(net, name)
    return net
