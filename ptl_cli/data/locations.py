"""Where datasets, pools and downloaded weights live on disk."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$PTL_CACHE_DIR`` or the platform's user cache directory for ptl."""
    env = os.environ.get("PTL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ptl"))


def data_dir(explicit: str | None = None) -> Path:
    """``--data-dir``, else ``$PTL_DATA_DIR``, else ``<cache>/data``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("PTL_DATA_DIR")
    return Path(env).expanduser() if env else cache_dir() / "data"
