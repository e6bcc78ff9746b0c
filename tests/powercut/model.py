"""The randomized power-cut suite's bookkeeping: what storage acknowledged to its clients, and
the check of what a restarted storage shows against it.

Pure (no I/O): the workload records facts as answers arrive, the suite turns what the new
storage lists and reads into `Observed` values, and `check` says what is wrong. An answer
counts whenever it arrives, even after the cut: storage can only have sent it for work that
was durable by then (or it is broken, which is what this finds).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

LIVE_STATES = ("recording", "recorded")


@dataclass
class TrackFacts:
    media: bytes  # what the client streams, from its start: any durable prefix must match it
    acked: int = 0  # the largest committed_size storage acknowledged
    finished: bool = False  # a finish was acknowledged (finish_write, or finalize's answer)


@dataclass(frozen=True)
class Upload:
    generation: int
    data: bytes


@dataclass
class SessionFacts:
    id: str
    tracks: dict[str, TrackFacts]
    created: bool = False  # CreateSession answered
    delete_tried: bool = False  # a DeleteSession was sent (it may have happened)
    deleted: bool = False  # DeleteSession answered OK
    queued: bool = False  # finalized into `queued` (answered): never recording again
    ready: bool = False  # marked `ready` (answered): compiles stop at `ready`
    generation: int = 0  # the highest compile generation a begin_compile answered with
    uploads: list[Upload] = field(default_factory=list)  # every output upload attempted
    output: Upload | None = None  # the last upload whose publish was acknowledged
    recompiling: bool = False  # a begin_compile was sent since: it voids that output
    keep: bool = False  # kept for the compile at the end of the run

    def forget(self) -> None:
        """Deleted: from now on only its id matters (it must never be listed again)."""
        self.deleted = True
        self.uploads.clear()
        self.output = None

    @property
    def complete(self) -> bool:
        """Every track streamed whole and finished: what a browser leaves after Stop."""
        return all(t.finished and t.acked == len(t.media) for t in self.tracks.values())


@dataclass(frozen=True)
class ObservedTrack:
    size: int  # the committed size storage reports after its restart
    finished: bool
    data: bytes  # what storage serves of it


@dataclass(frozen=True)
class ObservedOutput:
    size: int
    etag: str
    data: bytes


@dataclass(frozen=True)
class Observed:
    """One session as the restarted storage lists and serves it."""

    state: str
    generation: int
    tracks: dict[str, ObservedTrack]
    output: ObservedOutput | None


@dataclass(frozen=True)
class DiskView:
    """The data dir as the new mount shows it, after storage started on it."""

    manifests: dict[str, bool]  # session directory -> its session.json parses
    leftovers: list[str]  # temporary names storage clears at start (.deleted-*, manifest tmps)


@dataclass
class Checked:
    """What one check looked at, for the suite's summary."""

    sessions: int = 0
    acked_bytes: int = 0
    lost_bytes: int = 0
    violations: list[str] = field(default_factory=list)


def etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def check_track(sid: str, name: str, facts: TrackFacts, seen: ObservedTrack | None) -> Checked:
    result = Checked(acked_bytes=facts.acked)
    where = f"session {sid} {name}"
    if seen is None:
        if facts.acked or facts.finished:
            result.lost_bytes = facts.acked
            result.violations.append(
                f"{where}: the track is gone ({facts.acked} bytes acknowledged"
                f"{', finished' if facts.finished else ''})"
            )
        return result
    if seen.size < facts.acked:
        result.lost_bytes = facts.acked - seen.size
        result.violations.append(
            f"{where}: {seen.size} bytes durable, {facts.acked} acknowledged "
            f"({result.lost_bytes} acknowledged bytes lost)"
        )
    if seen.size > len(facts.media):
        result.violations.append(
            f"{where}: {seen.size} bytes, more than the {len(facts.media)} sent"
        )
    if len(seen.data) != seen.size:
        result.violations.append(f"{where}: size {seen.size} but {len(seen.data)} bytes served")
    if seen.data != facts.media[: len(seen.data)]:
        at = _first_difference(seen.data, facts.media)
        result.violations.append(f"{where}: bytes differ from what was sent at offset {at}")
        if at < facts.acked:
            result.lost_bytes = max(result.lost_bytes, facts.acked - at)
    if facts.finished and not seen.finished:
        result.violations.append(f"{where}: finished (acknowledged) but no longer finished")
    return result


def check_output(sid: str, facts: SessionFacts, seen: ObservedOutput | None) -> list[str]:
    where = f"session {sid} output"
    problems: list[str] = []
    if seen is None:
        if facts.output is not None and not facts.recompiling:
            problems.append(f"{where}: gone, yet compile {facts.output.generation} published it")
        return problems
    if len(seen.data) != seen.size:
        problems.append(f"{where}: size {seen.size} but {len(seen.data)} bytes served")
    if etag(seen.data) != seen.etag:
        problems.append(f"{where}: its bytes do not match its etag {seen.etag}")
    candidates = [u for u in facts.uploads if u.data == seen.data]
    if not candidates:
        problems.append(f"{where}: {seen.size} bytes that no upload sent")
    elif facts.output is not None and all(
        u.generation < facts.output.generation for u in candidates
    ):
        problems.append(
            f"{where}: an older compile's bytes replaced compile {facts.output.generation}'s"
        )
    return problems


def check(facts: dict[str, SessionFacts], listed: dict[str, Observed], disk: DiskView) -> Checked:
    """Everything acknowledged is there, nothing deleted came back, every manifest loads."""
    result = Checked()
    bad = result.violations
    for sid in listed:
        if sid.startswith(".") or sid.endswith((".tmp", ".partial")):
            bad.append(f"{sid!r} is listed as a session")
        elif sid not in facts:
            bad.append(f"session {sid} is listed but was never created")
    for name, parses in sorted(disk.manifests.items()):
        if not parses:
            bad.append(f"{name}/session.json does not load")
        elif name not in listed:
            bad.append(f"{name}/session.json loads but storage does not list {name}")
    bad.extend(f"{name} left over after start" for name in disk.leftovers)
    for sid, session in facts.items():
        seen = listed.get(sid)
        if seen is None:
            if session.created and not session.delete_tried:
                bad.append(f"session {sid}: created (acknowledged) but missing")
                result.lost_bytes += sum(t.acked for t in session.tracks.values())
            continue
        if session.deleted:
            bad.append(f"session {sid}: deleted (acknowledged) but listed again")
            continue
        result.sessions += 1
        for name in seen.tracks:
            if name not in session.tracks:
                bad.append(f"session {sid}: a {name} track nobody opened")
        for name, track in session.tracks.items():
            one = check_track(sid, name, track, seen.tracks.get(name))
            result.acked_bytes += one.acked_bytes
            result.lost_bytes += one.lost_bytes
            bad.extend(one.violations)
        if session.queued and seen.state in LIVE_STATES:
            bad.append(f"session {sid}: finalized (acknowledged) but {seen.state} again")
        if session.ready and seen.state != "ready":
            bad.append(f"session {sid}: ready (acknowledged) but {seen.state}")
        if seen.generation < session.generation:
            bad.append(
                f"session {sid}: compile generation {seen.generation}, "
                f"but {session.generation} was acknowledged"
            )
        bad.extend(check_output(sid, session, seen.output))
    return result


@dataclass
class Stats:
    """The suite's totals, printed at the end of a run."""

    seed: int = 0
    cuts: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    acked_bytes_checked: int = 0
    sessions_checked: int = 0
    lost_bytes: int = 0
    compiled: int = 0

    def add(self, checked: Checked) -> None:
        self.acked_bytes_checked += checked.acked_bytes
        self.sessions_checked += checked.sessions
        self.lost_bytes += checked.lost_bytes

    def summary(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.operations.items()))
        return (
            f"seed {self.seed}: {self.cuts} cut points, {self.sessions_checked} sessions checked, "
            f"{self.acked_bytes_checked} acknowledged bytes checked, "
            f"{self.lost_bytes} acknowledged bytes lost, {self.compiled} sessions compiled; "
            f"operations: {ops}"
        )
