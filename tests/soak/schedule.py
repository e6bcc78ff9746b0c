"""The nemesis's fault schedule: a pure function of the seed, so a run can be repeated.

The schedule fixes which fault comes when and its parameters (how long a disk stays full, which
client pauses); what a fault meets when it lands (which compile is running, how many sockets
are open) depends on timing, and the run records it.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass


class Kind(enum.StrEnum):
    KILL_STORAGE = "kill-storage"
    KILL_WEB = "kill-web"
    KILL_COMPILE = "kill-compile"
    POWER_CUT = "power-cut"
    DISK_FULL = "disk-full"
    DROP = "drop-sockets"
    STALL = "stall-sockets"
    PAUSE_CLIENT = "pause-client"


# Relative frequencies: restarts of storage and the web process cost seconds of CPU each (a new
# Python process), so network faults, which cost nothing, come more often.
WEIGHTS: dict[Kind, float] = {
    Kind.KILL_STORAGE: 1.0,
    Kind.KILL_WEB: 1.0,
    Kind.KILL_COMPILE: 1.5,
    Kind.POWER_CUT: 1.0,
    Kind.DISK_FULL: 1.0,
    Kind.DROP: 1.5,
    Kind.STALL: 1.0,
    Kind.PAUSE_CLIENT: 1.0,
}


@dataclass(frozen=True)
class Fault:
    at: float
    """Seconds from the start of the run (the earliest it starts: one fault at a time)."""
    kind: Kind
    seconds: float = 0.0
    """How long a lasting fault (full disk, stall, pause) lasts."""
    room: int = 0
    """Disk full: bytes that may still be written before ENOSPC."""
    pick: float = 0.0
    """In [0, 1): which of the candidates at that moment (a compile, a client) it hits."""

    def describe(self) -> str:
        extra = []
        if self.seconds:
            extra.append(f"{self.seconds:.1f}s")
        if self.kind == Kind.DISK_FULL:
            extra.append(f"room={self.room}")
        return f"{self.at:7.1f}s {self.kind.value}" + (f" ({', '.join(extra)})" if extra else "")


def make_schedule(
    seed: int,
    duration: float,
    *,
    mean_gap: float = 4.0,
    warmup: float = 5.0,
    weights: dict[Kind, float] | None = None,
) -> list[Fault]:
    """Faults from `warmup` until `duration`, gaps uniform in [mean_gap/2, 3*mean_gap/2]."""
    if duration <= 0 or mean_gap <= 0:
        raise ValueError("duration and mean_gap must be positive")
    rng = random.Random(seed)
    table = weights or WEIGHTS
    kinds = sorted(table, key=lambda k: k.value)
    faults: list[Fault] = []
    at = warmup
    while True:
        at += rng.uniform(mean_gap / 2, 3 * mean_gap / 2)
        if at >= duration:
            return faults
        kind = rng.choices(kinds, [table[k] for k in kinds])[0]
        seconds = 0.0
        room = 0
        if kind == Kind.DISK_FULL:
            seconds = rng.uniform(2.0, 6.0)
            room = rng.choice([0, 0, 64 * 1024, 512 * 1024])
        elif kind == Kind.STALL:
            seconds = rng.uniform(1.0, 5.0)
        elif kind == Kind.PAUSE_CLIENT:
            seconds = rng.uniform(1.0, 8.0)
        faults.append(Fault(round(at, 3), kind, round(seconds, 3), room, rng.random()))


def counts(faults: list[Fault]) -> dict[str, int]:
    out: dict[str, int] = {}
    for fault in faults:
        out[fault.kind.value] = out.get(fault.kind.value, 0) + 1
    return dict(sorted(out.items()))
