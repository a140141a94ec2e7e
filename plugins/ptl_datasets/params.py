"""Parameter schemas of the built-in datasets (pydantic only: cheap to import)."""

from __future__ import annotations

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
