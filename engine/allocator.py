"""CPU memory: keep freed tensor blocks in the process instead of handing them back to the kernel."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_TUNED = False
# glibc's malloc.h
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_cpu_allocator() -> bool:
    """Tune glibc's malloc for tensor churn (once per process; DDAUDIT_TUNE_MALLOC=0 skips it).

    A ConvNet step on CPU frees and re-allocates the same few-MB activations hundreds of times.
    By default glibc maps blocks over its dynamic threshold fresh and unmaps them on free, so
    every step page-faults them in again: 5x the page faults and 15-20% of an evaluation step
    (docs/SWEEPS.md, "Speed"). The values computed do not change, only where memory comes from.
    """
    global _TUNED
    if _TUNED or not sys.platform.startswith("linux") or os.environ.get("DDAUDIT_TUNE_MALLOC") == "0":
        return _TUNED
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _TUNED = (libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1  # glibc's maximum: smaller blocks from the heap
                  and libc.mallopt(_M_TRIM_THRESHOLD, 2**30) == 1   # give back only what exceeds 1 GB free
                  and libc.mallopt(_M_TOP_PAD, 64 * 2**20) == 1)     # grow the heap in 64 MB steps
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        _TUNED = False
    return _TUNED
