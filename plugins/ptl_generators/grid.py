"""A labeled PNG grid of sample rows (what ``ptl generate`` writes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch


def save_grid(rows: Sequence[torch.Tensor], labels: Sequence[str], out: str | Path, cell: int = 56) -> Path:
    """Each row: images ``(N, C, H, W)`` in [0, 1]; each label is drawn left of its row."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    label_w = max(120, 6 * max((len(t) for t in labels), default=0) + 12)
    n = max(r.shape[0] for r in rows)
    pad = 2
    width = label_w + n * (cell + pad) + pad
    height = len(rows) * (cell + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (images, text) in enumerate(zip(rows, labels, strict=True)):
        top = pad + i * (cell + pad)
        draw.text((6, top + cell // 2 - 6), text, fill="black", font=font)
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]
        pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        for j, arr in enumerate(pixels):
            tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (label_w + pad + j * (cell + pad), top))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
