"""Build the bundled data pack: a seeded, class-balanced real subset of Fashion-MNIST.

    python scripts/make_data_pack.py [--source /usr/share/datasets/fashion-mnist]

Reads the full dataset (Debian's ``dataset-fashion-mnist`` package by default), keeps
500 images per class from **half B** of the train split (``fashion.half_indices``: the bundled
source models train on half A only, so no source model has seen a pack image) and 100 per class
from the test split (seed 0), and writes ``plugins/ptl_datasets/data/fashion-pack.safetensors``
with provenance metadata.
Fashion-MNIST is MIT-licensed (Zalando Research).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from ptl_datasets.fashion import PACK_PATH, find_files, half_indices, read_idx

PER_CLASS = {"train": 500, "test": 100}


def balanced_subset(labels: torch.Tensor, per_class: int, seed: int, pool: torch.Tensor) -> torch.Tensor:
    """``per_class`` indices of every class, drawn (seeded) from the indices in ``pool``."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for cls in range(10):
        idx = pool[labels[pool] == cls]
        keep.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
    return torch.sort(torch.cat(keep)).values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=None, help="directory with the IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(PACK_PATH))
    args = parser.parse_args()
    tensors, meta = {}, {"seed": str(args.seed), "license": "MIT (Fashion-MNIST, Zalando Research)"}
    meta["train_half"] = "B"
    for split, per_class in PER_CLASS.items():
        files = find_files(args.source, split)
        if files is None:
            raise SystemExit(
                "Fashion-MNIST not found: apt-get install dataset-fashion-mnist, or --source DIR"
            )
        images, labels = read_idx(files[0]), read_idx(files[1]).long()
        pool = half_indices(labels, "B") if split == "train" else torch.arange(labels.numel())
        keep = balanced_subset(labels, per_class, args.seed, pool)
        tensors[f"{split}_images"] = images[keep].unsqueeze(1).contiguous()
        tensors[f"{split}_labels"] = labels[keep].contiguous()
        tensors[f"{split}_source_index"] = keep.contiguous()
        for f in files:
            meta[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, args.out, metadata=meta)
    size = Path(args.out).stat().st_size / 2**20
    print(
        f"wrote {args.out} ({size:.1f} MiB): "
        + ", ".join(f"{k} {tuple(v.shape)}" for k, v in tensors.items())
    )


if __name__ == "__main__":
    main()
