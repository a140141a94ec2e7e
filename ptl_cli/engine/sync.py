"""Where ptl reads a value back from the accelerator on purpose, and why.

A GPU runs ahead of the Python thread that feeds it; every read of a device value on the host
(``.item()``, ``float(t)``, ``.tolist()``, a blocking copy, a data-dependent shape) makes the host
wait for the queue to drain. ptl's training steps make none: loss, accuracy and counters stay on
the device and are read once per log record, checkpoint or evaluation, and each such read is
wrapped in :func:`host_sync` with its reason.

In a real run :func:`host_sync` only sets a context variable. The simulated GPU
(:mod:`ptl_cli.testing_gpu`) reads it: a host sync inside ``host_sync(reason)`` is listed with
that reason, one outside it is a defect the tests report with its file and line.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_REASON: contextvars.ContextVar[str | None] = contextvars.ContextVar("ptl_host_sync", default=None)


@contextlib.contextmanager
def host_sync(reason: str) -> Iterator[None]:
    """Mark the block as a deliberate read of device values on the host (``reason`` says why)."""
    token = _REASON.set(reason)
    try:
        yield
    finally:
        _REASON.reset(token)


def sync_reason() -> str | None:
    """The reason of the innermost :func:`host_sync` block, or None outside one."""
    return _REASON.get()
