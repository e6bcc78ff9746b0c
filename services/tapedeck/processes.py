"""Child processes that do not outlive their parent.

A compile runs as `web → tapedeck compile → ffmpeg`. If the web process is killed, its
compile must die too, or a restarted worker would start a second compile of the same session
beside the orphan. Linux's PR_SET_PDEATHSIG does that; elsewhere it is a no-op.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
# Resolved once in the parent: between fork and exec the child should do as little as it can.
_prctl: Callable[..., int] | None = (
    ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
)


def die_with_parent() -> None:
    """`preexec_fn` for subprocesses: SIGKILL this child when its parent dies."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
BULK_BUFFER_BYTES = 32 * 1024 * 1024


def tune_malloc_for_bulk_io() -> None:
    """Let glibc reuse freed megabyte buffers instead of mapping fresh pages for each.

    The compiler uploads the MP4 in 4 MiB messages, allocating and freeing a few MiB each.
    Above glibc's mmap threshold every such buffer is a new mapping whose pages all fault in
    again (measured: the compiler's side of an MP4 upload ran at up to 2.4x the speed with
    this). Memory stays bounded: at most twice `BULK_BUFFER_BYTES` are kept free.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mallopt(_M_MMAP_THRESHOLD, BULK_BUFFER_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * BULK_BUFFER_BYTES)
