"""Child processes that do not outlive their parent.

A compile runs as `web → tapedeck compile → ffmpeg`. If the web process is killed, its
compile must die too, or a restarted worker would start a second compile of the same session
beside the orphan. Linux's PR_SET_PDEATHSIG does that, set by util-linux's `setpriv` in the
child just before it runs the real program; without `setpriv` children are started as they
are.

Not with a `preexec_fn`: Python code between fork and exec runs gRPC's fork handlers in a
process that holds a channel, and they can abort the child (seen: FFmpeg "killed by SIGABRT"
with `ev_epoll1_linux.cc ... epoll_wait error: Bad file descriptor` as its output). Without a
`preexec_fn`, Python starts children with vfork, which runs no handlers.
"""

from __future__ import annotations

import ctypes
import shutil
import sys
from collections.abc import Sequence

_SETPRIV = shutil.which("setpriv")
_NICE = shutil.which("nice")


def child_command(argv: Sequence[str], *, nice: int = 0) -> list[str]:
    """`argv`, run so that it is killed when this process dies, and with `nice` added to its
    niceness (a lower CPU priority: speculative work yields to ingest)."""
    prefix: list[str] = []
    if nice and _NICE:
        prefix += [_NICE, "-n", str(nice)]
    if _SETPRIV and sys.platform.startswith("linux"):
        prefix += [_SETPRIV, "--pdeathsig", "KILL"]
    return [*prefix, *argv]


_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
BULK_BUFFER_BYTES = 32 * 1024 * 1024


def _mallopt(param: int, value: int) -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).mallopt(param, value)


def tune_malloc_for_bulk_io() -> None:
    """Let glibc reuse freed megabyte buffers instead of mapping fresh pages for each.

    The compiler uploads the MP4 in 4 MiB messages, allocating and freeing a few MiB each.
    Above glibc's mmap threshold every such buffer is a new mapping whose pages all fault in
    again (measured: the compiler's side of an MP4 upload ran at up to 2.4x the speed with
    this). Memory stays bounded: at most twice `BULK_BUFFER_BYTES` are kept free.
    """
    _mallopt(_M_MMAP_THRESHOLD, BULK_BUFFER_BYTES)
    _mallopt(_M_TRIM_THRESHOLD, 2 * BULK_BUFFER_BYTES)
