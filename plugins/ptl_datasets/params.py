"""Parameter schemas of the built-in datasets (pydantic only: cheap to import)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

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
    clusters: int = Field(
        0,
        ge=0,
        le=16,
        description="with coarse: split each coarse class into this many visual clusters (k-means of "
        "half A's pixels; label = nearest centroid) -- a finer source label set than the coarse one",
    )

    @model_validator(mode="after")
    def _clusters_need_coarse(self) -> FashionParams:
        if self.clusters and not self.coarse:
            raise ValueError("clusters splits the coarse classes: set coarse = true as well")
        return self
