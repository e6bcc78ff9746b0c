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
