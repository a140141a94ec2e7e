"""Parameter schemas of the built-in datasets (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ptl_cli.schema import Params


class NoParams(Params):
    """Datasets whose images come in one fixed size."""


class ResizedParams(Params):
    """Datasets of variable-size photos, decoded on load: evaluated at a centre crop, trained on
    random-resized crops of the full photo (:mod:`ptl_cli.data.photo`)."""

    image_size: int = Field(
        224,
        ge=8,
        description="side of the square crops (evaluation first resizes the short side to size·256/224)",
    )


class FolderParams(ResizedParams):
    """A directory with one sub-directory of images per class (``root/split/class/*.jpg``)."""

    path: str | None = Field(None, description="the folder; defaults to the data directory")


class FashionPackParams(Params):
    """The bundled pack: fine labels (default) or the 4 coarse ones."""

    coarse: bool = Field(False, description="labels top/trouser/footwear/bag instead of the 10 classes")


class FashionParams(FashionPackParams):
    """Full Fashion-MNIST; the bundled source models train on ``half="A"`` with ``coarse=true``."""

    half: Literal["all", "A", "B"] = Field(
        "all", description="a seeded class-stratified half of the train split (the test split stays whole)"
    )
