"""ampd's processes run without transparent huge pages.

Their memory is mostly Arrow buffers that live for one chunk. The allocators (mimalloc, in
pyarrow and in DataFusion) hand out and give back such memory in large spans, and where the
kernel backs a span with a 2 MiB huge page, the first touch of it zeroes all 2 MiB at once.
On the bench's derived job, a fresh worker spent 0.3 s of its 0.45 s in the kernel zeroing
huge pages; with them off, 0.04 s (docs/feat/datasets-derived.md).

`AMP_TRANSPARENT_HUGE_PAGES=keep` leaves the process as the system set it. The setting is
inherited by the processes a worker forks (its fetch processes).
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["huge_pages_disabled", "no_huge_pages"]

_PR_SET_THP_DISABLE = 41
_PR_GET_THP_DISABLE = 42


def no_huge_pages() -> bool:
    """Turn transparent huge pages off for this process (Linux), unless
    AMP_TRANSPARENT_HUGE_PAGES=keep; True if they are off now."""
    if os.environ.get("AMP_TRANSPARENT_HUGE_PAGES", "").lower() == "keep":
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False  # no prctl here: nothing to turn off


def huge_pages_disabled() -> bool:
    """Whether this process runs with transparent huge pages off."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1
    except (OSError, AttributeError):
        return False
