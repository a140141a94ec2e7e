"""The bundled source models by name: which file ``weights="bundled"`` (or ``"bundled:NAME"``) means.

Three sets ship, each a BigGAN-style generator, a DDPM and a Conv-4 classifier trained by the
recipes in ``recipes/source/``:

* ``fashion-coarse`` (the default): the 4 coarse classes top / trouser / footwear / bag of half A
  of the Fashion-MNIST train split -- the main transfer quickstart's source, whose target is fine
  classes of the other half (ImageNet -> fine-grained targets in miniature);
* ``fashion-clusters``: the same half A with each coarse class split into 6 visual clusters (24
  classes; ``ptl_datasets.fashion.cluster_centres``) -- a finer source label set;
* ``fashion04``: Fashion-MNIST classes 0-4 of the whole train split -- the ``far`` quickstart's
  source, whose target classes 5-9 share little content with it.
"""

from __future__ import annotations

from pathlib import Path

from ptl_cli.errors import UserError

NAMES = ("fashion-coarse", "fashion-clusters", "fashion04")
DEFAULT = "fashion-coarse"
DESCRIPTIONS = {
    "fashion-coarse": "Fashion-MNIST coarse classes (top, trouser, footwear, bag) of train half A",
    "fashion-clusters": "Fashion-MNIST coarse classes of train half A, each split into 6 visual clusters",
    "fashion04": "Fashion-MNIST classes 0-4",
}


def is_bundled(weights: str) -> bool:
    """``"bundled"`` or ``"bundled:NAME"``."""
    return weights == "bundled" or weights.startswith("bundled:")


def name_of(weights: str) -> str:
    """The set a ``weights`` value names (a one-line error for an unknown one)."""
    name = weights.partition(":")[2] or DEFAULT
    if name not in NAMES:
        raise UserError(f"weights {weights!r}: bundled models are {', '.join(f'bundled:{n}' for n in NAMES)}")
    return name


def path(kind: str, weights: str) -> Path:
    """The shipped file of model ``kind`` (``biggan``, ``ddpm``, ``classifier``) in the named set."""
    from ptl_generators import weights as W

    return W.bundled(f"{kind}-{name_of(weights)}.safetensors")
