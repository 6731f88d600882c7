"""Hand freed heap memory back to the OS now and then.

glibc's malloc keeps large freed blocks in its arenas once its dynamic mmap threshold has risen,
so the learner's and the infer lane's big, short-lived activation tensors (tens of MiB per
minibatch, allocated from several threads) leave RSS creeping up for minutes although nothing
leaks. `malloc_trim(0)` returns the free pages of every arena; the main loops call it once per
metrics interval, which costs well under a millisecond. A no-op where libc has no malloc_trim."""
from __future__ import annotations

import ctypes
import ctypes.util

try:
    _trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
except (OSError, AttributeError):
    _trim = None


def release_free_heap() -> bool:
    return bool(_trim(0)) if _trim is not None else False
