"""Parameter schemas of the built-in datasets (pydantic only: cheap to import)."""

from __future__ import annotations

from pydantic import Field

from ptl_cli.schema import Params


class NoParams(Params):
    """Datasets whose images come in one fixed size."""


class ResizedParams(Params):
    """Datasets of variable-size photos, resized (short side) and centre-cropped on load."""

    image_size: int = Field(224, ge=8, description="side of the square images after resizing")


class FolderParams(ResizedParams):
    """A directory with one sub-directory of images per class (``root/split/class/*.jpg``)."""

    path: str | None = Field(None, description="the folder; defaults to the data directory")
