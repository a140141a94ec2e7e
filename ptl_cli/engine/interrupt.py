"""Turning SIGINT/SIGTERM into a clean stop at the next step boundary.

The first signal sets a flag that training loops poll (``ctx.should_stop()``); the loop then
saves a checkpoint and the run is marked ``interrupted``. A second SIGINT stops at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Interrupted(Exception):
    """Raised by a loop after it saved its checkpoint in response to a signal."""


class InterruptGuard:
    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, object] = {}

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
