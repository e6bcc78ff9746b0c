"""Pure decisions about a session's life: compile requests, retries, idle finalization, TTL.

No I/O here, so the embedded worker, the sweeper and the Kubernetes operator share one
definition of each rule, and the tests need no servers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum

from tapedeck.sessions import State

ACTIVE_COMPILE = (State.QUEUED, State.COMPILING, State.READY)


class CompileVerdict(Enum):
    QUEUE = "queue"  # move to queued and start a compile
    FINALIZE_AND_QUEUE = "finalize-and-queue"  # nobody is writing: close the tracks, then queue
    ALREADY = "already"  # queued, compiling or ready: report the state, start nothing
    STILL_RECORDING = "still-recording"
    EMPTY = "empty"
    EXPIRED = "expired"


@dataclass(frozen=True)
class SessionFacts:
    state: State
    writing: bool
    recorded_bytes: int


def decide_compile(facts: SessionFacts) -> CompileVerdict:
    """What `POST /api/compile-video/{id}` (or `spec.compile: true`) does for a session.

    A `recording` session with no open writer is one whose client went away without `finish`:
    compiling it now is what the user asked for, so it is finalized rather than refused.
    """
    if facts.state in ACTIVE_COMPILE:
        return CompileVerdict.ALREADY
    if facts.state == State.EXPIRED:
        return CompileVerdict.EXPIRED
    if facts.state == State.RECORDING and facts.writing:
        return CompileVerdict.STILL_RECORDING
    if facts.recorded_bytes == 0:
        return CompileVerdict.EMPTY
    if facts.state == State.RECORDING:
        return CompileVerdict.FINALIZE_AND_QUEUE
    return CompileVerdict.QUEUE


class AfterExit(Enum):
    DONE = "done"
    RETRY = "retry"
    GIVE_UP = "give-up"


def after_compile_exit(state: State, attempts: int, max_attempts: int) -> AfterExit:
    """A compile process ended: did it settle the session, or should it run again?

    The compiler itself records `ready` or `failed`; any other state means it died on the way
    (killed, storage lost), which is worth another bounded try.
    """
    if state in (State.READY, State.FAILED, State.EXPIRED):
        return AfterExit.DONE
    return AfterExit.RETRY if attempts < max_attempts else AfterExit.GIVE_UP


MAX_TTL = timedelta(days=3650)
"""The longest a session may live (docs/decisions.md): ten years is longer than anyone keeps a
recording on purpose, and every expiry it allows is a date every client can print."""
_MAX_TTL_MS = int(MAX_TTL.total_seconds()) * 1000


def check_ttl(seconds: float) -> None:
    """The one bound on a TTL, wherever one enters (settings, `spec.ttl`, storage): longer
    than 0 s and at most `MAX_TTL`. Raises ValueError with a message for people."""
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError("a TTL must be longer than 0s")
    if seconds > MAX_TTL.total_seconds():
        raise ValueError(f"a TTL must be at most {MAX_TTL.days}d (10 years), not {_days(seconds)}")


def check_expiry(expires_at_ms: int, created_at_ms: int) -> None:
    """An expiry set directly (storage's UpdateSession): at most `MAX_TTL` after the
    session's creation. Earlier ones, even past ones, are allowed: that is expiring now."""
    if expires_at_ms - created_at_ms > _MAX_TTL_MS:
        raise ValueError(
            f"expires_at_ms is more than {MAX_TTL.days}d after the session's creation: a TTL "
            f"must be at most {MAX_TTL.days}d (10 years), not "
            f"{_days((expires_at_ms - created_at_ms) / 1000)}"
        )


def _days(seconds: float) -> str:
    return "an infinite one" if math.isinf(seconds) else f"{seconds / 86400:,.0f} days"


def is_expired(expires_at_ms: int, now_ms: int) -> bool:
    return expires_at_ms > 0 and now_ms >= expires_at_ms


def should_finalize_idle(
    state: State, writing: bool, last_write_ms: int, now_ms: int, idle_ms: int
) -> bool:
    """A recording nobody has written to for `idle_ms` is treated as finished."""
    return state == State.RECORDING and not writing and now_ms - last_write_ms >= idle_ms
