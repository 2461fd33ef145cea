"""Keep freed tensor memory in the process, instead of handing it back to the kernel each step.

glibc's malloc returns every freed block above its mmap threshold (128 KiB, raised dynamically
to at most 32 MiB) straight to the kernel, and trims the heap top above twice that. A training
step frees its activations and gradients and the next step maps the same amount afresh, so
every step page-faults on every large tensor: on the 2-core development machine,
EfficientNet-Lite0 trained whole at 160 px (batch 32) took about 200,000 page faults a step
and ran 1.4-1.55x slower than with the setting below (`benchmarks/bench_allocator.py`), and
inference at 224 px 2.5x slower. Raising both thresholds to `KEEP_BELOW` lets malloc reuse those
blocks: almost no page faults after the first steps, a peak resident size 2-30% higher.
Blocks above `KEEP_BELOW` are still mapped and unmapped.

The setting is per process and cannot be undone (glibc stops adjusting its thresholds once they
are set), so it is applied where a process trains (`make_trainer`) or runs a batch job
(`evaluate_image_bundle`, `Predictor.predict_paths`), never on import or in the web service.
It does nothing where malloc is not glibc's, where the user has set `MALLOC_MMAP_THRESHOLD_`,
`MALLOC_TRIM_THRESHOLD_` or `GLIBC_TUNABLES` themselves, or where
`BREASTCAD_KEEP_FREED_MEMORY=0`.
"""

from __future__ import annotations

import ctypes
import os
import sys

KEEP_BELOW = 1 << 29  # bytes: blocks up to 512 MiB are reused; the heap keeps up to 1 GiB free
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_applied = False


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process). Returns whether they are set."""
    global _applied
    if _applied:
        return True
    if os.environ.get("BREASTCAD_KEEP_FREED_MEMORY", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl also has a mallopt, which ignores these
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, KEEP_BELOW)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * KEEP_BELOW)
    )
    return _applied
