"""Pure session rules shared by the embedded worker, the sweeper and the operator."""

from __future__ import annotations

import pytest

from tapedeck.lifecycle import (
    AfterExit,
    CompileVerdict,
    SessionFacts,
    after_compile_exit,
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
