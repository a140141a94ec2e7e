"""A prefetching loader: the next batches are fetched, pinned and copied while the model trains.

Training loops here fetch uint8 batches (a slice of an in-memory dataset, a gather from a
pseudo-sample pool, a ``DataLoader`` batch) and augment them on the device. :class:`Prefetcher`
moves the fetching off the critical path: a background thread pulls batches ``depth`` steps
ahead, pins them (CUDA) and starts their host-to-device copy on a side stream; the loop gets
batches already on the device. On CPU it still overlaps the fetch with the step.

Exactness is kept by construction: the thread only runs the batch *source*, which must draw no
random numbers from torch's global RNG (samplers and :class:`StepStream`-style sources use their
own generators), so augmentation in the loop sees the same RNG stream with or without it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from ptl_cli.engine.device import with_index

_DONE = object()


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply ``fn`` to every tensor in a batch (a tensor, or tuples/lists/dicts of them)."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: map_tensors(v, fn) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def step_batches(fetch: Callable[[int], Any], start: int, stop: int) -> Iterator[Any]:
    """``fetch(step)`` for ``step`` in ``[start, stop)``: a step-indexed batch source."""
    for step in range(start, stop):
        yield fetch(step)


class Prefetcher:
    """Iterate ``source``'s batches on ``device``, prepared ``depth`` batches ahead.

    Use as a context manager (or call :meth:`close`) so that a loop left early (an interrupt, an
    error) stops the background thread. ``depth=0`` fetches synchronously in the caller's thread
    (the simple path, e.g. for debugging).
    """

    def __init__(self, source: Iterable[Any], device: Any, depth: int = 2) -> None:
        self.source = source
        self.device = with_index(device)  # set_device and streams refuse a bare "cuda"
        self.depth = depth
        self.cuda = self.device.type == "cuda"
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stream = torch.cuda.Stream(self.device) if self.cuda else None

    # -- the producer --------------------------------------------------------------------------
    def _prepare(self, batch: Any) -> tuple[Any, Any]:
        """Pin and start the copy to the device; returns ``(batch on device, ready event)``."""
        if not self.cuda:
            return map_tensors(batch, lambda t: t.to(self.device)), None
        # tensors already on the device (on-the-fly pseudo samples) stay as they are
        pinned = map_tensors(batch, lambda t: t if t.is_cuda or t.is_pinned() else t.pin_memory())
        with torch.cuda.stream(self._stream):
            moved = map_tensors(pinned, lambda t: t.to(self.device, non_blocking=True))
            event = torch.cuda.Event()
            event.record(self._stream)
        return moved, event

    def _produce(self) -> None:
        try:
            if self.cuda:
                torch.cuda.set_device(self.device)
            for batch in self.source:
                item = self._prepare(batch)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put_final(exc)

    def _put_final(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- the consumer --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        if self.depth <= 0:
            for batch in self.source:
                yield self._ready(self._prepare(batch))
            return
        self._stop = threading.Event()  # each iteration gets a fresh thread and queue
        self._queue = queue.Queue(maxsize=self.depth)
        self._thread = threading.Thread(target=self._produce, name="ptl-prefetch", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self._ready(item)
        finally:
            self.close()

    def _ready(self, item: tuple[Any, Any]) -> Any:
        """The batch, usable on the current stream: it waits for the side stream's copy (on the
        device, not the host), and the allocator learns that this stream uses the memory."""
        batch, event = item
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            map_tensors(batch, lambda t: t.record_stream(current) or t)
        return batch

    def close(self) -> None:
        """Stop the background thread (idempotent)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prefetch(source: Iterable[Any], device: Any, depth: int = 2) -> Prefetcher:
    """``Prefetcher(source, device, depth)``: iterate it like ``source``, batches on ``device``."""
    return Prefetcher(source, device, depth)
