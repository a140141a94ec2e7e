"""BigGAN-deep generator, written to read the published checkpoints strictly.

The published BigGAN-deep 128/256/512 weights (DeepMind's TF Hub modules, converted to PyTorch
and distributed as ``config.json`` + ``pytorch_model.bin`` by ``pytorch-pretrained-biggan``) use
the module layout below; every parameter and buffer name matches theirs, so their state dict
loads with ``strict=True``. We own this implementation instead of depending on that package
because it is unmaintained since 2019, pulls in boto3/requests, loads with ``strict=False``
(a wrong file would load silently) and has no training mode. Differences:

* spectral norm is a small explicit layer (:class:`SNLinear`, :class:`SNConv2d`) with the same
  ``weight_orig``/``weight_u``/``weight_v`` names as ``torch.nn.utils.spectral_norm``: in eval
  mode it uses the stored ``u``/``v`` (what the converted checkpoints were prepared for), in
  train mode it runs one power iteration;
* conditional batch norm has a training mode (batch statistics) and a way to compute the
  per-truncation "standing statistics" the published checkpoints ship (``running_means`` /
  ``running_vars`` with ``n_stats`` rows for truncation 0..1), see :func:`standing_statistics`;
* two config keys generalize the published configs for small models: ``bottom_width`` (the
  first feature map's side, 4 in the published ones) and ``out_channels`` (1 for grey images);
  ``rgb_conv_channels`` keeps the published ``conv_to_rgb`` shape (ch → ch, first 3 kept);
* the statistics for ψ come from row ``ψ·(n_stats-1)``, interpolated linearly between two rows.
  The original computes ``modf(ψ / 0.02)`` and weights the two rows the other way round, so
  between rows it leans to the far one, and floating-point rounding sends ψ = 0.14, 0.28, 0.56,
  0.58 and 0.94 to a neighbouring row; elsewhere on the 0.02 grid (0.4, 0.5, 1.0…) both agree.

The class input is a bias-free linear layer on a ``num_classes`` vector, so a probability vector
gives the probability-weighted mix of class embeddings directly (soft conditioning for PCS).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# (upsample?, in multiplier, out multiplier) per block, as in the converted configs.
LAYERS_128 = [
    (False, 16, 16),
    (True, 16, 16),
    (False, 16, 16),
    (True, 16, 8),
    (False, 8, 8),
    (True, 8, 4),
    (False, 4, 4),
    (True, 4, 2),
    (False, 2, 2),
    (True, 2, 1),
]
LAYERS_256 = LAYERS_128[:5] + [(True, 8, 8), (False, 8, 8)] + LAYERS_128[5:]
LAYERS_512 = LAYERS_256 + [(False, 1, 1), (True, 1, 1)]


@dataclass
class BigGANConfig:
    """The keys of the published ``config.json`` plus three optional ones for small models."""

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: list[tuple[bool, int, int]] = field(default_factory=lambda: list(LAYERS_128))
    attention_layer_position: int = 8
    eps: float = 1e-4
    n_stats: int = 51
    bottom_width: int = 4
    out_channels: int = 3
    rgb_conv_channels: int | None = None  # None: channel_width, the published layout

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BigGANConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown BigGAN config keys {unknown}; known: {sorted(known)}")
        config = cls(**data)
        config.layers = [(bool(u), int(i), int(o)) for u, i, o in config.layers]
        return config

    @classmethod
    def from_json(cls, text: str) -> BigGANConfig:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [list(layer) for layer in self.layers]
        return data

    @property
    def image_size(self) -> int:
        return self.bottom_width * 2 ** sum(1 for up, _, _ in self.layers if up)

    @classmethod
    def deep(cls, resolution: int) -> BigGANConfig:
        """The configs of the published BigGAN-deep checkpoints."""
        layers = {128: LAYERS_128, 256: LAYERS_256, 512: LAYERS_512}[resolution]
        return cls(output_dim=resolution, layers=list(layers))


class _SpectralNorm(nn.Module):
    """Shared spectral normalization: ``weight = weight_orig / sigma`` with ``sigma ≈ u·W·v``."""

    weight_orig: nn.Parameter
    weight_u: torch.Tensor
    weight_v: torch.Tensor

    def _init_sn(self, out_features: int, in_features: int, eps: float) -> None:
        self.eps = eps
        u = F.normalize(torch.randn(out_features), dim=0, eps=eps)
        v = F.normalize(torch.randn(in_features), dim=0, eps=eps)
        self.register_buffer("weight_u", u)
        self.register_buffer("weight_v", v)

    def sn_weight(self) -> torch.Tensor:
        w = self.weight_orig
        mat = w.reshape(w.shape[0], -1)
        u, v = self.weight_u, self.weight_v
        if self.training:
            with torch.no_grad():  # one power iteration, as torch.nn.utils.spectral_norm
                v = F.normalize(mat.t() @ u, dim=0, eps=self.eps)
                u = F.normalize(mat @ v, dim=0, eps=self.eps)
                self.weight_v.copy_(v)
                self.weight_u.copy_(u)
            # the buffers may be updated again before backward (a second forward): keep copies
            u, v = u.clone(), v.clone()
        sigma = torch.dot(u, mat @ v)
        return w / sigma


class SNLinear(_SpectralNorm):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, eps: float = 1e-12) -> None:
        super().__init__()
        layer = nn.Linear(in_features, out_features, bias=bias)
        self.weight_orig = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone()) if bias else None
        self._init_sn(out_features, in_features, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.sn_weight(), self.bias)


class SNConv2d(_SpectralNorm):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        bias: bool = True,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        layer = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=bias)
        self.weight_orig = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone()) if bias else None
        self.padding = padding
        self._init_sn(out_channels, in_channels * kernel_size * kernel_size, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.sn_weight(), self.bias, padding=self.padding)


class SelfAttn(nn.Module):
    """SAGAN self-attention with max-pooled keys/values (names as in the converted checkpoints)."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.snconv1x1_theta = SNConv2d(channels, channels // 8, 1, bias=False, eps=eps)
        self.snconv1x1_phi = SNConv2d(channels, channels // 8, 1, bias=False, eps=eps)
        self.snconv1x1_g = SNConv2d(channels, channels // 2, 1, bias=False, eps=eps)
        self.snconv1x1_o_conv = SNConv2d(channels // 2, channels, 1, bias=False, eps=eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        theta = self.snconv1x1_theta(x).view(b, ch // 8, h * w)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).view(b, ch // 8, -1)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (b, hw, hw/4)
        g = F.max_pool2d(self.snconv1x1_g(x), 2).view(b, ch // 2, -1)
        out = (g @ attn.transpose(1, 2)).view(b, ch // 2, h, w)
        return x + self.gamma * self.snconv1x1_o_conv(out)


class BigGANBatchNorm(nn.Module):
    """Batch norm whose statistics depend on the truncation (eval) or the batch (training).

    In eval mode the statistics come from ``running_means``/``running_vars``: row ``i`` holds the
    standing statistics for truncation ``i / (n_stats - 1)``. Conditional instances scale and
    shift by spectral-normalized linear maps of the condition vector ``[z, class embedding]``.
    """

    def __init__(self, num_features: int, cond_dim: int | None, n_stats: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.conditional = cond_dim is not None
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))
        if self.conditional:
            self.scale = SNLinear(cond_dim, num_features, bias=False, eps=eps)
            self.offset = SNLinear(cond_dim, num_features, bias=False, eps=eps)
        else:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        self._collect: list[torch.Tensor] | None = None  # set by standing_statistics()

    def _stats(self, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        pos = truncation * (self.running_means.shape[0] - 1)
        lo = min(int(math.floor(pos)), self.running_means.shape[0] - 1)
        frac = pos - lo
        if frac <= 1e-9:
            return self.running_means[lo], self.running_vars[lo]
        mean = self.running_means[lo] * (1 - frac) + self.running_means[lo + 1] * frac
        var = self.running_vars[lo] * (1 - frac) + self.running_vars[lo + 1] * frac
        return mean, var

    def forward(self, x: torch.Tensor, truncation: float, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or self._collect is not None:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            if self._collect is not None:
                self._collect.append(torch.stack([mean.detach(), var.detach()]))
        else:
            mean, var = self._stats(truncation)
        x = (x - mean.view(1, -1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1) + self.eps)
        if self.conditional:
            weight = 1 + self.scale(cond)
            bias = self.offset(cond)
        else:
            weight, bias = self.weight.unsqueeze(0), self.bias.unsqueeze(0)
        return x * weight[:, :, None, None] + bias[:, :, None, None]


class GenBlock(nn.Module):
    """BigGAN-deep residual block: 1×1 bottleneck, two 3×3 convs, 1×1 expansion."""

    def __init__(self, in_size: int, out_size: int, cond_dim: int, up_sample: bool, n_stats: int, eps: float):
        super().__init__()
        middle = in_size // 4
        self.up_sample = up_sample
        self.drop_channels = in_size != out_size
        self.bn_0 = BigGANBatchNorm(in_size, cond_dim, n_stats, eps)
        self.conv_0 = SNConv2d(in_size, middle, 1, eps=eps)
        self.bn_1 = BigGANBatchNorm(middle, cond_dim, n_stats, eps)
        self.conv_1 = SNConv2d(middle, middle, 3, padding=1, eps=eps)
        self.bn_2 = BigGANBatchNorm(middle, cond_dim, n_stats, eps)
        self.conv_2 = SNConv2d(middle, middle, 3, padding=1, eps=eps)
        self.bn_3 = BigGANBatchNorm(middle, cond_dim, n_stats, eps)
        self.conv_3 = SNConv2d(middle, out_size, 1, eps=eps)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, truncation, cond)))
        h = F.relu(self.bn_1(h, truncation, cond))
        if self.up_sample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, truncation, cond)))
        h = self.conv_3(F.relu(self.bn_3(h, truncation, cond)))
        if self.drop_channels:
            x = x[:, : h.shape[1]]
        if self.up_sample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return h + x


class Generator(nn.Module):
    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        self.config = config
        ch, eps = config.channel_width, config.eps
        cond_dim = config.z_dim + config.class_embed_dim
        bottom = config.bottom_width
        self.gen_z = SNLinear(cond_dim, bottom * bottom * config.layers[0][1] * ch, eps=eps)
        layers: list[nn.Module] = []
        for i, (up, mult_in, mult_out) in enumerate(config.layers):
            if i == config.attention_layer_position:
                layers.append(SelfAttn(ch * mult_in, eps))
            layers.append(GenBlock(ch * mult_in, ch * mult_out, cond_dim, up, config.n_stats, eps))
        self.layers = nn.ModuleList(layers)
        last = ch * config.layers[-1][2]
        self.bn = BigGANBatchNorm(last, None, config.n_stats, eps)
        self.conv_to_rgb = SNConv2d(last, config.rgb_conv_channels or last, 3, padding=1, eps=eps)

    def forward(self, cond: torch.Tensor, truncation: float) -> torch.Tensor:
        c = self.config
        h = self.gen_z(cond)
        # the TF weights produce (B, H, W, C): keep that layout so the published weights work
        h = h.view(-1, c.bottom_width, c.bottom_width, c.layers[0][1] * c.channel_width)
        h = h.permute(0, 3, 1, 2).contiguous()
        for layer in self.layers:
            h = layer(h, cond, truncation) if isinstance(layer, GenBlock) else layer(h)
        h = self.conv_to_rgb(F.relu(self.bn(h, truncation)))
        return torch.tanh(h[:, : c.out_channels])


class BigGAN(nn.Module):
    """``G(z, y, ψ)``: ``y`` is a ``(B, num_classes)`` one-hot or probability matrix."""

    def __init__(self, config: BigGANConfig) -> None:
        super().__init__()
        if not 0 <= config.attention_layer_position <= len(config.layers):
            config.attention_layer_position = len(config.layers)  # no attention layer
        self.config = config
        self.embeddings = nn.Linear(config.num_classes, config.class_embed_dim, bias=False)
        self.generator = Generator(config)

    def forward(self, z: torch.Tensor, class_probs: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """Images in [-1, 1]; ``truncation`` picks the batch-norm statistics in eval mode."""
        if not 0 < truncation <= 1:
            raise ValueError(f"truncation must be in (0, 1], got {truncation}")
        cond = torch.cat([z, self.embeddings(class_probs.to(z.dtype))], dim=1)
        return self.generator(cond, truncation)


def truncated_noise(
    batch: int, dim: int, truncation: float, generator: torch.Generator | None = None, device: Any = "cpu"
) -> torch.Tensor:
    """``ψ · z`` with ``z`` from a standard normal truncated to [-2, 2] (BigGAN's sampling).

    On the CPU this is ``nn.init.trunc_normal_`` (the draws every recorded run and pool used).
    Its rejection loop asks the device whether any value is still out of range (a host sync per
    call), so on an accelerator the truncated normal is drawn by inverting its CDF instead: the
    same distribution in one pass with no sync (other numbers than the CPU's, as any GPU draw).
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.empty(batch, dim, device=gen_device)
    if gen_device.type == "cpu":
        nn.init.trunc_normal_(z, 0.0, 1.0, -2.0, 2.0, generator=generator)
    else:
        lo, hi = (1 + math.erf(-2 / math.sqrt(2))) / 2, (1 + math.erf(2 / math.sqrt(2))) / 2
        z.uniform_(2 * lo - 1, 2 * hi - 1, generator=generator).erfinv_().mul_(math.sqrt(2)).clamp_(-2.0, 2.0)
    return (truncation * z).to(device)


@contextmanager
def _collecting(model: BigGAN) -> Iterator[list[BigGANBatchNorm]]:
    norms = [m for m in model.modules() if isinstance(m, BigGANBatchNorm)]
    for m in norms:
        m._collect = []
    try:
        yield norms
    finally:
        for m in norms:
            m._collect = None


@torch.no_grad()
def standing_statistics(
    model: BigGAN, batches: int = 4, batch_size: int = 128, generator: torch.Generator | None = None
) -> None:
    """Fill ``running_means``/``running_vars`` for every truncation row (BigGAN's standing stats).

    For row ``i`` (truncation ``ψ = i/(n_stats-1)``, with row 0 using a tiny ψ) it samples
    ``batches`` batches of ``ψ``-truncated noise and uniform classes and averages the batch
    statistics each norm layer sees. The model is left in eval mode.
    """
    model.eval()
    cfg = model.config
    device = next(model.parameters()).device
    rows = cfg.n_stats
    for i in range(rows):
        psi = max(i / (rows - 1), 1e-3)
        with _collecting(model) as norms:
            for _ in range(batches):
                z = truncated_noise(batch_size, cfg.z_dim, psi, generator, device)
                gen_device = generator.device if generator is not None else "cpu"
                y = torch.randint(cfg.num_classes, (batch_size,), generator=generator, device=gen_device)
                model(z, F.one_hot(y.to(device), cfg.num_classes).float(), psi)
            for m in norms:
                stats = torch.stack(m._collect).mean(0)
                m.running_means[i] = stats[0]
                m.running_vars[i] = stats[1]
