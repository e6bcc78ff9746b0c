"""When a recording gets a follower Job, and who compiles once it is asked: pure, no I/O.

A follower (`tapedeck follow ID`, jobs.build_follower_job) compiles while the session records
and runs the compile itself once the session is queued, fenced by the compile generation like
any compile. The rule the operator keeps is that a follower and a compile Job never both run
the compile: either a running follower with the request's output options compiles and no Job
is made, or the follower is stopped (its pods gone) before the session is queued and the
one-shot compile Job runs. A follower that ended before settling the session is replaced by
the one-shot Job; it is never itself retried.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

from tapedeck.compiler.plan import OutputOptions
from tapedeck.sessions import State
from tapedeck_operator.jobs import follower_fits
from tapedeck_operator.status import follower_running, job_view


class AtRequest(StrEnum):
    ONE_SHOT = "one-shot"  # no follower (or it ended): the compile Job, as without followers
    FOLLOWER = "follower"  # it runs with the request's options: it compiles, no Job
    STOP_FIRST = "stop-first"  # it cannot be counted on: delete it, queue once it is gone


def should_follow(state: State, active: int, limit: int) -> bool:
    """A new follower for a session in `state`, with `active` followers running of `limit`."""
    return state == State.RECORDING and 0 <= active < limit


def active_followers(jobs: Iterable[Mapping[str, Any]]) -> int:
    return sum(not job_view(job).finished for job in jobs)


def at_compile_request(
    follower: Mapping[str, Any] | None, session_id: str, output: OutputOptions
) -> AtRequest:
    """Who compiles a compile request, given the session's follower Job (None: none)."""
    if follower is None or job_view(follower).finished:
        return AtRequest.ONE_SHOT
    if follower_running(follower) and follower_fits(follower, session_id, output):
        return AtRequest.FOLLOWER
    # Pending (it might start after the compile Job and see the session queued), or made
    # with other output options: it must be gone before the session is queued.
    return AtRequest.STOP_FIRST


def one_shot_after_follower(state: State) -> bool:
    """The follower that was to compile ended (failed, deleted, or exited): the session
    still waits for a compile, so the one-shot compile Job runs it."""
    return state in (State.QUEUED, State.COMPILING)
