"""The ``clip`` source classifier: CLIP zero-shot over a list of class names (transformers).

With a text-to-image generator as ``G_s``, CLIP as ``C_s`` means transfer needs no model trained
on any source data at all: both read the same ``classes`` and ``templates``
(:mod:`ptl_generators.prompts`). A class's text embedding is CLIP's zero-shot recipe: the
projected text features of each template, normalized, averaged over the templates and
normalized again. The logits of an image are ``logit_scale · <image embedding, class embedding>``
with both normalized — what ``CLIPModel`` returns as ``logits_per_image`` for one template.
The class embeddings are computed once, when the classifier is built.

Preprocessing works on tensors, as every ptl source classifier's does: grey images are repeated
to RGB, the shorter side is resized to the model's size (bicubic, antialiased, as CLIP's image
processor resamples), the centre is cropped, and the folder's ``preprocessor_config.json`` mean
and std normalize (OpenAI CLIP's statistics when a folder has none).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ptl_cli.data.augment import match_channels
from ptl_cli.errors import UserError
from ptl_generators import prompts as P
from ptl_generators import weights as W

#: OpenAI CLIP's normalization, for folders without a preprocessor_config.json.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HUB_PATTERNS = ["*.json", "*.txt", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]


def _features(out: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose pooler_output it is (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipClassifier(nn.Module):
    """``forward(images01) -> (B, K)`` zero-shot logits over the class names."""

    def __init__(
        self,
        model: nn.Module,
        text_embeddings: torch.Tensor,
        class_names: Sequence[str],
        size: int,
        crop: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        classifier_id: str,
    ) -> None:
        super().__init__()
        self.vision = model.vision_model
        self.projection = model.visual_projection
        self.register_buffer("logit_scale", model.logit_scale.detach().exp().reshape(()).clone())
        self.register_buffer("text_embeddings", text_embeddings)
        self.class_names = tuple(class_names)
        self.num_classes = len(self.class_names)
        self.classes_are_names = True  # its classes are the names it scores: G_s/C_s must agree on them
        self.size = size
        self.crop = crop
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._id = classifier_id
        self.eval()

    @property
    def id(self) -> str:
        return self._id

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images of any size -> CLIP's input: RGB, shorter side resized, centre crop, normalized."""
        x = match_channels(images, 3)
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        new = (max(self.crop[0], round(h * scale)), max(self.crop[1], round(w * scale)))
        if (h, w) != new:
            x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
        top, left = (new[0] - self.crop[0]) // 2, (new[1] - self.crop[1]) // 2
        x = x[..., top : top + self.crop[0], left : left + self.crop[1]]
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        param = self.projection.weight
        pixels = self.preprocess(images.to(device=param.device, dtype=torch.float32)).to(param.dtype)
        pooled = self.vision(pixel_values=pixels).pooler_output
        return F.normalize(self.projection(pooled).float(), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * self.image_embeddings(images) @ self.text_embeddings.t()


@torch.no_grad()
def text_embeddings(model: nn.Module, tokenizer: Any, names: Sequence[str], templates: Sequence[str], device):
    """``(K, P)``: per class, the normalized projected text features averaged over templates, renormalized."""
    spoken = [p for per_class in P.prompts(names, templates) for p in per_class]
    features = []
    for start in range(0, len(spoken), 256):  # CLIP's causal text model: padding changes nothing
        tokens = tokenizer(spoken[start : start + 256], padding=True, truncation=True, return_tensors="pt")
        features.append(_features(model.get_text_features(**tokens.to(device))).float())
    unit = F.normalize(torch.cat(features), dim=-1).view(len(names), len(templates), -1)
    return F.normalize(unit.mean(dim=1), dim=-1)


def _preprocessing(directory: Path, image_size: int) -> tuple[int, tuple[int, int], list[float], list[float]]:
    """Resize side, crop and normalization from ``preprocessor_config.json`` (CLIP's defaults otherwise)."""
    path = directory / "preprocessor_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    size = config.get("size", image_size)
    side = int(size.get("shortest_edge", size.get("height", image_size)) if isinstance(size, dict) else size)
    crop = config.get("crop_size", side)
    if not config.get("do_center_crop", True):
        crop = side
    crop_hw = (int(crop["height"]), int(crop["width"])) if isinstance(crop, dict) else (int(crop), int(crop))
    return side, crop_hw, config.get("image_mean", list(CLIP_MEAN)), config.get("image_std", list(CLIP_STD))


def clip_directory(weights: str) -> Path:
    path = Path(weights).expanduser()
    if path.is_dir():
        return path
    if weights.count("/") == 1 and not weights.startswith((".", "/", "~")):
        return W.hub_snapshot(
            weights, "CLIP weights", allow_patterns=HUB_PATTERNS, fix="pass weights=DIR holding a CLIP folder"
        )
    raise UserError(
        f"CLIP weights {weights!r}: no such directory, and not a hub id; give a transformers CLIP "
        "folder or a hub id like openai/clip-vit-base-patch32"
    )


def build(
    device: Any = "cpu",
    weights: str = "openai/clip-vit-base-patch32",
    classes: str | list[str] = "imagenet",
    templates: list[str] | None = None,
    dtype: str = "auto",
) -> ClipClassifier:
    """The ``clip`` factory (see the module docstring)."""
    P.require("transformers", "text-to-image", "the clip source classifier")
    from transformers import CLIPModel

    from ptl_generators.text_to_image import load_tokenizer, load_transformers, resolve_dtype

    device = torch.device(device)
    templates = list(templates or P.DEFAULT_TEMPLATES)
    names = P.class_names(classes)
    P.prompts(names[:1], templates)
    directory = clip_directory(weights)
    if not (directory / "config.json").is_file():
        raise UserError(f"{directory} is not a transformers CLIP folder (no config.json)")
    model = load_transformers(CLIPModel, directory, "CLIP model").to(device)
    tokenizer = load_tokenizer(directory, "CLIP tokenizer")
    embeddings = text_embeddings(model, tokenizer, names, templates, device)
    side, crop, mean, std = _preprocessing(directory, int(model.config.vision_config.image_size))
    files = sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.json"))
    digest = W.digest(files, extra=P.text_digest(names, templates))
    chosen = resolve_dtype(dtype, device)
    classifier = ClipClassifier(model, embeddings, names, side, crop, mean, std, f"clip-{digest}")
    del model.text_model, model.text_projection  # the class embeddings are all C_s needs of the text side
    if chosen != torch.float32:
        classifier.vision.to(chosen)
        classifier.projection.to(chosen)
    return classifier.to(device)
