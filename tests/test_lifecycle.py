"""Pure session rules shared by the embedded worker, the sweeper and the operator."""

from __future__ import annotations

import pytest

from tapedeck.lifecycle import (
    MAX_TTL,
    AfterExit,
    CompileVerdict,
    SessionFacts,
    after_compile_exit,
    check_expiry,
    check_ttl,
    decide_compile,
    is_expired,
    should_finalize_idle,
)
from tapedeck.sessions import State


@pytest.mark.parametrize(
    ("state", "writing", "size", "verdict"),
    [
        (State.RECORDED, False, 10, CompileVerdict.QUEUE),
        (State.FAILED, False, 10, CompileVerdict.QUEUE),
        (State.RECORDING, True, 10, CompileVerdict.STILL_RECORDING),
        (State.RECORDING, False, 10, CompileVerdict.FINALIZE_AND_QUEUE),
        (State.RECORDING, False, 0, CompileVerdict.EMPTY),
        (State.RECORDED, False, 0, CompileVerdict.EMPTY),
        (State.QUEUED, False, 10, CompileVerdict.ALREADY),
        (State.COMPILING, False, 10, CompileVerdict.ALREADY),
        (State.READY, False, 10, CompileVerdict.ALREADY),
        (State.EXPIRED, False, 10, CompileVerdict.EXPIRED),
    ],
)
def test_compile_decisions(state: State, writing: bool, size: int, verdict: CompileVerdict) -> None:
    assert decide_compile(SessionFacts(state, writing, size)) == verdict


def test_retries_are_bounded() -> None:
    assert after_compile_exit(State.READY, 1, 3) == AfterExit.DONE
    assert after_compile_exit(State.FAILED, 1, 3) == AfterExit.DONE
    assert after_compile_exit(State.COMPILING, 1, 3) == AfterExit.RETRY
    assert after_compile_exit(State.COMPILING, 3, 3) == AfterExit.GIVE_UP
    assert after_compile_exit(State.QUEUED, 2, 3) == AfterExit.RETRY


def test_expiry_and_idle() -> None:
    assert is_expired(1000, 1000) and not is_expired(1001, 1000) and not is_expired(0, 10**15)
    assert should_finalize_idle(State.RECORDING, False, 0, 300_000, 300_000)
    assert not should_finalize_idle(State.RECORDING, True, 0, 10**9, 300_000)
    assert not should_finalize_idle(State.RECORDING, False, 1, 300_000, 300_000)
    assert not should_finalize_idle(State.RECORDED, False, 0, 10**9, 300_000)


# --- TTL bound: one rule for the settings, the CRD's operator, storage and the api ---


@pytest.mark.parametrize("seconds", [1, 86400, MAX_TTL.total_seconds()])
def test_ttls_within_the_bound(seconds: float) -> None:
    check_ttl(seconds)


@pytest.mark.parametrize(
    ("seconds", "complaint"),
    [
        (0, "longer than 0s"),
        (-5, "longer than 0s"),
        (float("nan"), "longer than 0s"),
        (MAX_TTL.total_seconds() + 1, "at most 3650d"),
        (100_000_000 * 86400, "at most 3650d"),
        (float("inf"), "at most 3650d"),
        (2**63, "at most 3650d"),
    ],
)
def test_ttls_beyond_the_bound(seconds: float, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        check_ttl(seconds)


def test_expiry_bound_counts_from_creation() -> None:
    created = 1_700_000_000_000
    check_expiry(created + int(MAX_TTL.total_seconds() * 1000), created)
    check_expiry(created - 1, created)  # expiring now (or earlier) is always allowed
    check_expiry(0, created)
    with pytest.raises(ValueError, match="at most 3650d"):
        check_expiry(created + int(MAX_TTL.total_seconds() * 1000) + 1, created)
    with pytest.raises(ValueError, match="at most 3650d"):
        check_expiry(2**63 - 1, created)
