"""Keep freed memory in the process for reuse: CPU inference on large frames allocates and
frees the same large activations op after op.

glibc hands blocks above its mmap threshold (at most 32 MiB, adapted at run time) straight
to the kernel and trims the heap top after a free, so each such op maps fresh pages and pays
one page fault per 4 KiB on first touch. At 1024 x 1024 micml's activations are hundreds of
MiB: measured on 2 cores (AMD EPYC, optimised eval forward), 1.65 million page faults and
~3.8 s of kernel time per forward, and next to none once freed memory stays with the
process. The price: the process keeps its peak heap (its RSS no longer shrinks after a
large frame), which a job that runs frames of one size reaches anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
#: Blocks up to this size come from the heap, which keeps what is freed.
MMAP_THRESHOLD = 1 << 30
#: Never give the heap's free top back to the kernel (the largest value mallopt takes).
TRIM_THRESHOLD = (1 << 31) - 1
#: Grow the heap in steps of this much, fewer system calls for a growing working set.
TOP_PAD = 64 << 20


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse (process-wide, once); False where
    the C library is not glibc (nothing changes there)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)
