"""Downloads with an offline answer: hub snapshots and URL files, cache first.

Every plugin that fetches weights (source models, pretrained architectures) follows one rule:
**offline is an answer, not a hang**. Files come from a local cache first; when they are not cached
and the machine is offline (``PTL_OFFLINE=1``, ``HF_HUB_OFFLINE=1``, ``TRANSFORMERS_OFFLINE=1``, or
the server cannot be reached: huggingface_hub's own connect timeouts, 20 s socket timeouts for
URLs) the one-line :class:`UserError` says what is missing, where it looked and how to provide it.
The helpers live in the core so that third-party plugins get the same behaviour as the built-ins.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ptl_cli.errors import UserError

_TRUE = ("1", "true", "yes", "on")


def offline() -> bool:
    """True when downloads must not be attempted (read at call time, not at import time)."""
    for var in ("PTL_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    return False


def hf_cache_dir() -> Path:
    """The hub cache, from the environment as it is now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def hub_snapshot(
    repo_id: str,
    what: str,
    allow_patterns: Iterable[str] | None = None,
    fix: str = "",
    cache_first: bool = True,
) -> Path:
    """A local directory with ``repo_id``'s files: from the cache, else downloaded when online.

    ``what`` names the component in errors (``"biggan weights"``); ``fix`` adds a hint on how to
    provide the files another way (a local directory). ``cache_first=False`` skips the cache-only
    lookup, for a second call whose patterns ask for files the cached snapshot lacks.
    """
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir()
    patterns = list(allow_patterns) if allow_patterns else None
    try:
        if cache_first:
            return Path(
                snapshot_download(
                    repo_id, cache_dir=str(cache), allow_patterns=patterns, local_files_only=True
                )
            )
    except Exception:  # noqa: BLE001 - any miss in the cache means: download, or explain
        pass
    how = (
        f"download it where there is internet (`hf download {repo_id}`) and copy the hub cache to "
        f"{cache}" + (f", or {fix}" if fix else "")
    )
    if offline():
        raise UserError(
            f"{what} {repo_id!r} are not in the Hugging Face cache {cache} and ptl is offline; {how}"
        )
    try:
        return Path(snapshot_download(repo_id, cache_dir=str(cache), allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001 - network and hub errors come in many types
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"{what} {repo_id!r} are not in the Hugging Face cache {cache} and could not be "
            f"downloaded ({reason}); {how}"
        ) from None


def cached_url(url: str, target: Path, what: str, where: str, fix: str, timeout: float = 20.0) -> Path:
    """``target`` if it exists; else ``url`` downloaded to it (atomically) when online.

    ``what`` names the component in errors, ``where`` the cache it looked in, ``fix`` how to
    provide the file without a download. Offline, or on any network error (connect/read timeouts
    of ``timeout`` seconds, HTTP errors, a short read), the answer is one :class:`UserError` line
    and no partial file is left behind.
    """
    import http.client
    import urllib.request

    target = Path(target)
    if target.is_file():
        return target
    if offline():
        raise UserError(f"{what}: {target.name} is not in {where} and ptl is offline; {fix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, tmp.open("wb") as fh:
            expected = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(1 << 20):
                fh.write(chunk)
                received += len(chunk)
        if expected is not None and received != int(expected):
            raise OSError(f"incomplete download, {received} of {expected} bytes")
    except (OSError, http.client.HTTPException) as exc:
        tmp.unlink(missing_ok=True)
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"{what}: {target.name} is not in {where} and could not be downloaded from {url} "
            f"({reason}); {fix}"
        ) from None
    os.replace(tmp, target)
    return target
