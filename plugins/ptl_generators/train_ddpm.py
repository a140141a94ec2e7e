"""Training a small class-conditional DDPM (diffusers ``UNet2DModel``) with a null class for CFG.

Epsilon prediction with the standard DDPM objective; labels are replaced by the null class
``K`` with probability ``class_dropout`` so the same network gives the unconditional prediction
classifier-free guidance needs. For speed on CPU the UNet can work on pixel-unshuffled images
(``patch = 2``: 28×28×1 becomes 14×14×4, a bijection, so the DDPM is still over pixels). AdamW
with linear warm-up and cosine decay; the EMA of the weights is what gets exported.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ptl_cli.data.base import DatasetInfo
from ptl_cli.errors import UserError
from ptl_generators.params import TrainSourceRecipe
from ptl_generators.train_biggan import evaluate_generator, write_sample_grid


def unet_config(recipe: TrainSourceRecipe, info: DatasetInfo) -> dict[str, Any]:
    d = recipe.ddpm
    if info.image_size % d.patch:
        raise UserError(f"ddpm.patch {d.patch} must divide the image size {info.image_size}")
    down = list(d.down_block_types)
    up = [name.replace("Down", "Up") for name in reversed(down)]
    return {
        "sample_size": info.image_size // d.patch,
        "in_channels": info.channels * d.patch**2,
        "out_channels": info.channels * d.patch**2,
        "block_out_channels": list(d.block_out_channels),
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": d.layers_per_block,
        "norm_num_groups": d.norm_num_groups,
        "num_class_embeds": info.num_classes + 1,  # the last row is the null class
        "attention_head_dim": None,
    }


def scheduler_config(recipe: TrainSourceRecipe) -> dict[str, Any]:
    return {
        "num_train_timesteps": recipe.ddpm.num_train_timesteps,
        "beta_schedule": recipe.ddpm.beta_schedule,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "prediction_type": "epsilon",
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }


class DDPMTrainer:
    def __init__(self, recipe: TrainSourceRecipe, info: DatasetInfo, device: torch.device) -> None:
        from diffusers import DDPMScheduler, UNet2DModel

        self.cfg = recipe.ddpm
        self.info = info
        self.device = device
        self.unet_config = unet_config(recipe, info)
        self.scheduler_config = scheduler_config(recipe)
        self.unet = UNet2DModel.from_config(self.unet_config).to(device)
        self.ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        alphas = DDPMScheduler.from_config(self.scheduler_config).alphas_cumprod
        self.alphas_cumprod = alphas.to(device)
        self.opt = torch.optim.AdamW(
            self.unet.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay
        )

    def _lr(self, step: int, total: int) -> float:
        if step < self.cfg.warmup:
            return self.cfg.lr * (step + 1) / self.cfg.warmup
        progress = (step - self.cfg.warmup) / max(1, total - self.cfg.warmup)
        return self.cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int, total: int) -> dict[str, Any]:
        for group in self.opt.param_groups:
            group["lr"] = self._lr(step, total)
        self.unet.train()
        x0 = F.pixel_unshuffle(images * 2 - 1, self.cfg.patch) if self.cfg.patch > 1 else images * 2 - 1
        batch = x0.shape[0]
        t = torch.randint(self.cfg.num_train_timesteps, (batch,), device=self.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        drop = torch.rand(batch, device=self.device) < self.cfg.class_dropout
        labels = torch.where(drop, torch.full_like(labels, self.info.num_classes), labels)
        loss = F.mse_loss(self.unet(xt, t, class_labels=labels).sample, noise)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._update_ema(step)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        decay = min(self.cfg.ema_decay, (1 + step) / (10 + step))
        for e, p in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            e.lerp_(p, 1 - decay)

    def state_dict(self) -> dict[str, Any]:
        return {"unet": self.unet.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.unet.load_state_dict(state["unet"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])

    def finalize(self, seed: int) -> None:
        pass

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        meta = {
            "ptl_format": "ddpm",
            "unet": self.unet_config,
            "scheduler": self.scheduler_config,
            "patch": self.cfg.patch,
            "null_class": self.info.num_classes,
            "class_names": list(self.info.class_names),
            "channels": self.info.channels,
            "image_size": self.info.image_size,
            "dataset": self.info.name,
            "sampling": {"eta": self.cfg.sample_eta},
        }
        return self.ema.state_dict(), meta

    def _generator(self, path: Path, device: torch.device):
        from ptl_generators.diffusion import build

        return build(
            device,
            weights=str(path),
            steps=self.cfg.sample_steps,
            guidance_scale=self.cfg.guidance_scale,
            eta=self.cfg.sample_eta,
        )

    def evaluate(
        self, path: Path, device: torch.device, recipe: TrainSourceRecipe, test: Any
    ) -> dict[str, Any]:
        return evaluate_generator(self._generator(path, device), recipe, device)

    def write_grid(self, path: Path, device: torch.device, out: Path) -> bool:
        return write_sample_grid(self._generator(path, device), out)
