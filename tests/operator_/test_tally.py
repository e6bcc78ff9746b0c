"""Compile metrics from the compile Jobs' status (operator/tapedeck_operator/tally.py)."""

from __future__ import annotations

from typing import Any

from tapedeck_operator.status import job_view
from tapedeck_operator.tally import Finished, JobTally


def job(status: dict[str, Any]) -> Any:
    return job_view({"metadata": {"name": "compile-x-1"}, "status": status})


PENDING: dict[str, Any] = {}
RUNNING = {"startTime": "2026-12-05T01:00:00Z", "active": 1}
DONE = {
    "startTime": "2026-12-05T01:00:00Z",
    "completionTime": "2026-12-05T01:01:30Z",
    "conditions": [{"type": "Complete", "status": "True"}],
}
FAILED = {
    "startTime": "2026-12-05T01:00:00Z",
    "failed": 3,
    "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
}


def test_queue_running_and_one_outcome_per_job() -> None:
    tally = JobTally()
    assert tally.observe("a", job(PENDING)) is None
    assert tally.observe("b", job(PENDING)) is None
    assert (tally.queued, tally.running) == (2, 0)
    assert tally.observe("a", job(RUNNING)) is None
    assert (tally.queued, tally.running) == (1, 1)
    assert tally.observe("a", job(DONE)) == Finished("ready", 90.0)
    assert tally.observe("a", job(DONE)) is None  # a replayed event counts nothing twice
    assert tally.observe("a", job(DONE), deleted=True) is None
    assert (tally.queued, tally.running) == (1, 0)
    assert tally.observe("b", job(FAILED)) == Finished("failed", None)
    assert (tally.queued, tally.running) == (0, 0)


def test_a_deleted_unfinished_job_leaves_the_gauges() -> None:
    tally = JobTally()
    tally.observe("c", job(RUNNING))
    assert tally.running == 1
    assert tally.observe("c", job(RUNNING), deleted=True) is None
    assert tally.running == 0


def test_bad_times_give_no_duration() -> None:
    tally = JobTally()
    broken = {**DONE, "completionTime": "yesterday"}
    assert tally.observe("d", job(broken)) == Finished("ready", None)
