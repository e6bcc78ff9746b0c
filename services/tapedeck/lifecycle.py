"""Pure decisions about a session's life: compile requests, retries, idle finalization, TTL.

No I/O here, so the embedded worker, the sweeper and the Kubernetes operator share one
definition of each rule, and the tests need no servers.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def is_expired(expires_at_ms: int, now_ms: int) -> bool:
    return expires_at_ms > 0 and now_ms >= expires_at_ms


def should_finalize_idle(
    state: State, writing: bool, last_write_ms: int, now_ms: int, idle_ms: int
) -> bool:
    """A recording nobody has written to for `idle_ms` is treated as finished."""
    return state == State.RECORDING and not writing and now_ms - last_write_ms >= idle_ms
