"""Training a source classifier: any model plugin, SGD + Nesterov, cosine schedule, flip/crop.

The result is a ptl ``classifier`` file: the network's state dict plus what is needed to use it
(architecture, input size and channels, normalization, class names), which the ``checkpoint``
and ``bundled`` source classifiers read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ptl_cli import plugins
from ptl_cli.data.augment import weak
from ptl_cli.data.base import DatasetInfo, normalize
from ptl_generators.params import TrainSourceRecipe


class ClassifierTrainer:
    def __init__(self, recipe: TrainSourceRecipe, info: DatasetInfo, device: torch.device) -> None:
        self.cfg = recipe.classifier
        self.info = info
        self.device = device
        spec = plugins.get("models", self.cfg.arch)
        self.net = spec.build(
            info.num_classes,
            info.channels,
            info.image_size,
            self.cfg.width,
            params=self.cfg.arch_params,
            where="recipe classifier.arch_params",
        ).to(device)
        decay = [p for n, p in self.net.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.net.named_parameters() if p.ndim <= 1]
        self.opt = torch.optim.SGD(
            [
                {"params": decay, "weight_decay": self.cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.cfg.lr,
            momentum=self.cfg.momentum,
            nesterov=True,
        )

    def step(self, images: torch.Tensor, labels: torch.Tensor, step: int, total: int) -> dict[str, Any]:
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
        self.net.train()
        if self.cfg.augment:
            images = weak(images, padding=max(1, images.shape[-1] // 14))
        logits = self.net(normalize(images, self.info.mean, self.info.std))
        loss = F.cross_entropy(logits, labels)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach(), "train_acc": (logits.argmax(1) == labels).float().mean()}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])

    def finalize(self, seed: int) -> None:
        self.net.eval()

    def export(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        meta = {
            "ptl_format": "classifier",
            "arch": self.cfg.arch,
            "width": self.cfg.width,
            "arch_params": self.cfg.arch_params,
            "num_classes": self.info.num_classes,
            "image_size": self.info.image_size,
            "channels": self.info.channels,
            "mean": list(self.info.mean),
            "std": list(self.info.std),
            "class_names": list(self.info.class_names),
        }
        return self.net.state_dict(), meta

    def evaluate(
        self, path: Path, device: torch.device, recipe: TrainSourceRecipe, test: Any
    ) -> dict[str, Any]:
        from ptl_generators.classifiers import checkpoint
        from ptl_generators.quality import accuracy

        classifier = checkpoint(device, path=str(path))
        return {"test_acc": accuracy(classifier, test.images, test.targets), "test_images": len(test)}

    def write_grid(self, path: Path, device: torch.device, out: Path) -> bool:
        return False
