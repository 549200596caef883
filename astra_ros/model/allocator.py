"""Keep the memory one streaming step frees for the next, instead of returning it to the kernel.

A step allocates and frees the same few hundred megabytes of activations every time. With glibc's
defaults each large block is mapped fresh from the kernel and unmapped when freed (its threshold only
grows after a free, and the heap's top is trimmed back), so every step page-faults its activations in
again: 15,000-20,000 minor faults and 0.04-0.06 s of kernel time per 128 px step, about a tenth of
its CPU time (`docs/SPEED.md`). Serving blocks up to ``MMAP_THRESHOLD`` from the heap and keeping up to
``TRIM_THRESHOLD`` of free heap removes them; the arithmetic is untouched, so outputs are identical.

The setting is process-wide (glibc's ``mallopt``) and applied once, when the first world model is
built; ``ASTRA_KEEP_FREED_MEMORY=0`` leaves the process's allocator as it is. Elsewhere than glibc
(musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 64 << 20  # bytes: blocks up to this come from the heap, where a free keeps them
TRIM_THRESHOLD = 128 << 20  # bytes of free heap kept for the next step before any goes back
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the thresholds once per process; True when glibc took them (now or earlier)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("ASTRA_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):  # no C library of that name, or one without mallopt
        mallopt = None
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # The mmap threshold first: setting the trim threshold alone also freezes glibc's adaptive mmap
    # threshold at its 128 KiB start, which maps every activation fresh (six times the faults).
    # Older glibc caps the mmap threshold at 32 MB (half its heap size) and refuses more.
    mmap_set = any(mallopt(_M_MMAP_THRESHOLD, size) for size in (MMAP_THRESHOLD, 32 << 20))
    _applied = mmap_set and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _applied:
        log.debug("mallopt refused the allocator thresholds; the allocator keeps its defaults")
    return _applied
