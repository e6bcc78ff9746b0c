"""Compile metrics from the compile Jobs' own status: pure, no I/O.

A compile pod is short-lived and has no Service, so nothing scrapes it and a Pushgateway would
be one more stateful thing to run. Its outcome and duration are already in the Job's status
(`startTime`, `completionTime`, its conditions), which the operator watches anyway: the
operator publishes the same `tapedeck_compile_*` series the embedded worker does.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from tapedeck_operator.status import JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, JobView

REMEMBERED = 10_000
"""Finished Jobs remembered so that each is counted once (kopf replays events on restart)."""


@dataclass(frozen=True)
class Finished:
    outcome: str  # "ready" or "failed", as the embedded worker counts them
    seconds: float | None  # None when the Job's status has no start or completion time


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        begun = datetime.fromisoformat(start.replace("Z", "+00:00"))
        ended = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (ended - begun).total_seconds())


@dataclass
class JobTally:
    live: dict[str, str] = field(default_factory=dict)
    """uid → phase of Jobs not finished yet."""
    counted: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def observe(self, uid: str, job: JobView, deleted: bool = False) -> Finished | None:
        """A Job event; returns the compile's outcome the first time its Job is seen finished."""
        if deleted or job.finished:
            self.live.pop(uid, None)
        else:
            self.live[uid] = job.phase
        if not job.finished or uid in self.counted:
            return None
        self.counted[uid] = None
        while len(self.counted) > REMEMBERED:
            self.counted.popitem(last=False)
        outcome = "ready" if job.phase == JOB_SUCCEEDED else "failed"
        end = job.completion_time if job.phase == JOB_SUCCEEDED else None
        return Finished(outcome, _seconds(job.start_time, end))

    @property
    def queued(self) -> int:
        """Jobs whose pod has not started (no `startTime`, nothing active)."""
        return sum(1 for phase in self.live.values() if phase == JOB_PENDING)

    @property
    def running(self) -> int:
        return sum(1 for phase in self.live.values() if phase == JOB_RUNNING)
