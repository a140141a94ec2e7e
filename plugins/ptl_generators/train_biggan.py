"""Training a BigGAN-style class-conditional GAN: hinge loss, spectral norm, TTUR, EMA generator.

As BigGAN: spectral norm in G and D, a projection discriminator, Adam with β1 = 0, the hinge
loss, an exponential moving average of G's weights (the EMA model is what gets exported), and
"standing statistics" computed for every truncation row at the end.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ptl_cli.data.base import DatasetInfo
from ptl_generators.biggan import BigGAN, BigGANConfig, standing_statistics
from ptl_generators.discriminator import ProjectionDiscriminator
from ptl_generators.params import TrainSourceRecipe


def config_from_recipe(recipe: TrainSourceRecipe, info: DatasetInfo) -> BigGANConfig:
    b = recipe.biggan
    config = BigGANConfig(
        output_dim=info.image_size,
        z_dim=b.z_dim,
        class_embed_dim=b.class_embed_dim,
        channel_width=b.channel_width,
        num_classes=info.num_classes,
        layers=[tuple(layer) for layer in b.layers],
        attention_layer_position=b.attention_layer_position,
        bottom_width=b.bottom_width,
        out_channels=info.channels,
        rgb_conv_channels=info.channels,
    )
    if config.image_size != info.image_size:
        from ptl_cli.errors import UserError

        raise UserError(
            f"biggan: bottom_width {b.bottom_width} with {sum(u for u, _, _ in config.layers)} upsampling "
            f"blocks gives {config.image_size}px images, but {info.name} has {info.image_size}px"
        )
    return config


class BigGANTrainer:
    def __init__(self, recipe: TrainSourceRecipe, info: DatasetInfo, device: torch.device) -> None:
        self.cfg = recipe.biggan
        self.info = info
        self.device = device
        self.config = config_from_recipe(recipe, info)
        self.g = BigGAN(self.config).to(device)
        self.d = ProjectionDiscriminator(
            info.num_classes, info.channels, self.cfg.d_channels, self.cfg.d_downsample
        )
        self.d.to(device)
        self.g_ema = copy.deepcopy(self.g).eval()
        for p in self.g_ema.parameters():
            p.requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=self.cfg.lr_g, betas=self.cfg.betas, eps=1e-6)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=self.cfg.lr_d, betas=self.cfg.betas, eps=1e-6)

    def _fake(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(batch, self.config.z_dim, device=self.device)
        y = F.one_hot(
            torch.randint(self.info.num_classes, (batch,), device=self.device), self.info.num_classes
        )
        return z, y.float()

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int, total: int) -> dict[str, Any]:
        self.g.train()
        self.d.train()
        real = images * 2 - 1
        y_real = F.one_hot(labels, self.info.num_classes).float()
        batch = real.shape[0]
        for _ in range(self.cfg.d_steps):
            z, y = self._fake(batch)
            with torch.no_grad():
                fake = self.g(z, y)
            d_loss = F.relu(1 - self.d(real, y_real)).mean() + F.relu(1 + self.d(fake, y)).mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        self.d.requires_grad_(False)
        z, y = self._fake(batch)
        g_loss = -self.d(self.g(z, y), y).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        self.d.requires_grad_(True)
        self._update_ema(step)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = self.cfg.ema_decay if step >= self.cfg.ema_start else 0.0
        for e, p in zip(self.g_ema.parameters(), self.g.parameters(), strict=True):
            e.lerp_(p, 1 - decay)
        for e, b in zip(self.g_ema.buffers(), self.g.buffers(), strict=True):
            e.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "g_ema": self.g_ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.g_ema.load_state_dict(state["g_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def finalize(self, seed: int) -> None:
        """Standing statistics for every truncation row, from a seeded generator."""
        gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        standing_statistics(
            self.g_ema,
            batches=self.cfg.standing_batches,
            batch_size=self.cfg.standing_batch_size,
            generator=gen,
        )

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        meta = {
            "ptl_format": "biggan",
            "config": self.config.to_dict(),
            "class_names": list(self.info.class_names),
            "dataset": self.info.name,
        }
        return self.g_ema.state_dict(), meta

    def _generator(self, path: Path, device: torch.device, truncation: float):
        from ptl_generators.biggan_generator import build

        return build(device, weights=str(path), truncation=truncation)

    def evaluate(
        self, path: Path, device: torch.device, recipe: TrainSourceRecipe, test: Any
    ) -> dict[str, Any]:
        return evaluate_generator(self._generator(path, device, self.cfg.truncation), recipe, device)

    def write_grid(self, path: Path, device: torch.device, out: Path) -> bool:
        return write_sample_grid(self._generator(path, device, self.cfg.truncation), out)


def evaluate_generator(generator: Any, recipe: TrainSourceRecipe, device: torch.device) -> dict[str, Any]:
    """Agreement of conditional samples with the recipe's source classifier (if any)."""
    if recipe.eval.classifier in ("", "none"):
        return {}
    from ptl_cli import plugins
    from ptl_generators.quality import agreement

    classifier = plugins.get("classifiers", recipe.eval.classifier).build(
        device, params=recipe.eval.classifier_params, where="recipe eval.classifier_params"
    )
    if classifier.num_classes != generator.num_classes:
        return {}
    mean, rates = agreement(generator, classifier, recipe.eval.samples_per_class, seed=recipe.seed)
    metrics: dict[str, Any] = {"agreement": mean}
    for c, rate in enumerate(rates):
        metrics[f"agreement_{c}"] = rate
    return metrics


def write_sample_grid(generator: Any, out: Path, per_class: int = 10) -> bool:
    from ptl_generators.grid import save_grid

    gen = torch.Generator().manual_seed(0)
    rows = [
        generator.sample(torch.full((per_class,), c, dtype=torch.long), generator=gen).cpu()
        for c in range(min(generator.num_classes, 10))
    ]
    labels = [f"{c}: {generator.class_names[c]}" for c in range(len(rows))]
    save_grid(rows, labels, out)
    return True
