"""Keep freed memory in the process on CPU runs, so a training step does not fault fresh pages in.

glibc hands large freed blocks (activations, gradients: tens of MB each) back to the kernel as
soon as they are freed, and the next step's allocations of the same sizes are zero-filled page by
page again. Profiles of CPU training steps (docs/scale.md, "The supermask step on a CPU") show
that as 150-430 ms of system time per ResNet-18 step, varying from process to process. Raising
glibc's mmap and trim thresholds keeps those blocks on the heap for reuse. It changes where
memory comes from, never what is computed; the process's resident memory stays near its peak
instead of shrinking between steps.

It is about the same as starting Python with ``MALLOC_MMAP_THRESHOLD_=33554432
MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=268435456`` (``mallopt`` takes an ``int``, so
the trim threshold is 2 GiB); a variable the user set wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {  # parameter: (environment variable, value)
    _M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 32 * 2**20),  # glibc's upper bound for it
    _M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 2**31 - 1),
    _M_TOP_PAD: ("MALLOC_TOP_PAD_", 256 * 2**20),
}


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (musl, macOS and Windows have no ``mallopt`` of this kind)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> list[str]:
    """Set the thresholds the user has not set; the names of the settings applied (empty: none).

    Called once at the start of a CPU run (``compute.malloc_tuning``, on by default) and by the
    step benchmarks, so both measure the same process configuration.
    """
    libc = _glibc()
    if libc is None:
        return []
    applied = []
    for param, (variable, value) in SETTINGS.items():
        if variable in os.environ:
            continue
        if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            applied.append(variable)
    return applied
