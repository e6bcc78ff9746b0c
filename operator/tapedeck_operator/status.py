"""A RecordingSession's status from storage's session and its compile Job: pure functions.

Storage is the source of truth for a session (the compile pod writes `compiling`, progress,
`ready` or `failed` there); the Job adds how Kubernetes ran the compile. The operator calls
`build_status` with both whenever either may have changed, patches what `status_patch` says
changed, and posts the Events `events` lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tapedeck._proto import storage_pb2 as pb
from tapedeck.api.models import ms_to_datetime
from tapedeck.lifecycle import AfterExit, after_compile_exit
from tapedeck.sessions import TRACKS, State
from tapedeck.storage.records import PB_TO_STATE

PHASES = {
    State.RECORDING: "Recording",
    State.RECORDED: "Recorded",
    State.QUEUED: "Queued",
    State.COMPILING: "Compiling",
    State.READY: "Ready",
    State.FAILED: "Failed",
    State.EXPIRED: "Expired",
}
INVALID = "Invalid"
MISSING = "Missing"
MESSAGE_LIMIT = 2000  # an Event's and a condition's message are read by people, in a terminal

JOB_PENDING, JOB_RUNNING, JOB_SUCCEEDED, JOB_FAILED = "Pending", "Running", "Succeeded", "Failed"


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_ms(ms: int) -> datetime:
    """Clamped like the api's dates: an absurd expiry stored before TTLs were bounded must
    not fail every status update."""
    return ms_to_datetime(ms)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def tail(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """The end of a long message: FFmpeg's error is at the end of what it printed."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


# --- Jobs ---


@dataclass(frozen=True)
class JobView:
    name: str
    request: int | None
    phase: str
    reason: str = ""
    message: str = ""
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (JOB_SUCCEEDED, JOB_FAILED)

    def as_status(self) -> dict[str, Any]:
        """`status.job`; every key always present, so a merge patch replaces them all."""
        return {
            "name": self.name,
            "request": self.request,
            "phase": self.phase,
            "reason": self.reason or None,
            "message": tail(self.message) or None,
            "startTime": self.start_time,
            "completionTime": self.completion_time,
        }


def job_view(job: Mapping[str, Any]) -> JobView:
    """What a Job's status says about its compile (batch/v1 Job conditions)."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    request_label = str((meta.get("labels") or {}).get("tapedeck.io/compile-request") or "")
    request = int(request_label) if request_label.isdigit() else None
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    phase, reason, message = JOB_PENDING, "", ""
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        phase = JOB_SUCCEEDED
    elif "Failed" in conditions or "FailureTarget" in conditions:
        failed = conditions.get("Failed") or conditions["FailureTarget"]
        phase = JOB_FAILED
        reason, message = str(failed.get("reason") or ""), str(failed.get("message") or "")
    elif status.get("active") or status.get("failed") or status.get("startTime"):
        phase = JOB_RUNNING
    return JobView(
        name=str(meta.get("name", "")),
        request=request,
        phase=phase,
        reason=reason,
        message=message,
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime"),
    )


def follower_running(job: Mapping[str, Any]) -> bool:
    """A follower Job whose pod runs (`ready`: its container started; it has no probe), so it
    sees the compile request within 50 ms and compiles. One still pending might start only
    after a compile Job would have: the operator does not count on it."""
    status = job.get("status") or {}
    return not job_view(job).finished and int(status.get("ready") or 0) >= 1


def vanished_job(previous: Mapping[str, Any]) -> JobView:
    """A Job that was running and is gone (deleted by hand, or cleaned up unseen)."""
    return JobView(
        name=str(previous.get("name", "")),
        request=previous.get("request"),
        phase=JOB_FAILED,
        reason="JobDeleted",
        message="the compile Job was deleted before it finished",
        start_time=previous.get("startTime"),
    )


def after_job(state: State) -> AfterExit:
    """A compile Job finished: did its pod settle the session?

    The same rule as the embedded worker's: the compiler records `ready` or `failed` itself,
    so any other state means it died on the way. Kubernetes has already spent the retry
    budget (`backoffLimit`) inside the Job, so from here that is a give-up, never a retry.
    """
    return after_compile_exit(state, attempts=1, max_attempts=1)


def give_up_message(job: JobView) -> str:
    why = ": ".join(p for p in (job.reason, job.message) if p)
    if job.phase == JOB_SUCCEEDED:
        why = "it exited without recording a result"
    return f"compile Job {job.name} failed: {why or 'no reason given'}"


# --- status ---


def _condition(
    kind: str,
    status: bool | None,
    reason: str,
    message: str,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
    generation: int | None,
) -> dict[str, Any]:
    value = "Unknown" if status is None else ("True" if status else "False")
    before = next((c for c in previous if c.get("type") == kind), None)
    changed = before is None or before.get("status") != value
    condition: dict[str, Any] = {
        "type": kind,
        "status": value,
        "reason": reason,
        "message": tail(message),
        "lastTransitionTime": rfc3339(now) if changed else before["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


def conditions(
    state: State | None,
    session: pb.Session | None,
    message: str,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
    generation: int | None,
) -> list[dict[str, Any]]:
    """`Recorded`, `Compiled` and `Ready`, in the Kubernetes Condition shape."""

    def make(kind: str, status: bool | None, reason: str, text: str) -> dict[str, Any]:
        return _condition(kind, status, reason, text, previous, now, generation)

    if state is None:  # invalid spec, or the session is missing from storage
        reason = "InvalidSpec" if message.startswith("spec.") else "SessionMissing"
        return [
            make("Recorded", None, reason, message),
            make("Compiled", None, reason, message),
            make("Ready", False, reason, message),
        ]
    recorded_bytes = sum(t.committed_size for t in session.tracks) if session else 0
    if state == State.RECORDING:
        recorded = make("Recorded", False, "Recording", "a track is still open")
    else:
        count = len(session.tracks) if session else 0
        recorded = make(
            "Recorded",
            True,
            "TracksFinished",
            f"{human_size(recorded_bytes)} in {count} track{'s' * (count != 1)}",
        )
    if state == State.READY and session is not None:
        out = session.output
        summary = f"{human_size(out.size)}, {human_duration(out.duration_seconds)}"
        compiled = make("Compiled", True, "Compiled", summary)
        ready = make("Ready", True, "OutputAvailable", f"the MP4 is ready: {summary}")
    elif state == State.FAILED:
        compiled = make("Compiled", False, "CompileFailed", message)
        ready = make("Ready", False, "CompileFailed", message)
    elif state in (State.QUEUED, State.COMPILING):
        compiled = make("Compiled", None, PHASES[state], "a compile is in progress")
        ready = make("Ready", False, PHASES[state], "a compile is in progress")
    elif state == State.EXPIRED:
        compiled = make("Compiled", False, "Expired", "the session has expired")
        ready = make("Ready", False, "Expired", "the session has expired")
    else:
        compiled = make("Compiled", False, "NotRequested", "no compile was requested")
        ready = make("Ready", False, PHASES[state], "set spec.compile to true to compile")
    return [recorded, compiled, ready]


def build_status(
    session: pb.Session | None,
    previous: Mapping[str, Any],
    now: datetime,
    *,
    job: Mapping[str, Any] | None = None,
    compile_request: int | None = None,
    generation: int | None = None,
    note: str = "",
    phase: str | None = None,
) -> dict[str, Any]:
    """The whole status. `note` is the operator's own message (e.g. why it waits); without
    one, a failed session's error (the tail of FFmpeg's message) is the message. `phase`
    overrides storage's (Invalid, Missing)."""
    state = PB_TO_STATE[session.state] if session is not None and phase is None else None
    message = note or (session.error if session is not None and state == State.FAILED else "")
    tracks = sorted(
        session.tracks if session else [],
        key=lambda t: TRACKS.index(t.name) if t.name in TRACKS else len(TRACKS),
    )
    recorded_bytes = sum(t.committed_size for t in tracks)
    output: dict[str, Any] | None = None
    if session is not None and state == State.READY and session.output.size:
        output = {
            "size": session.output.size,
            "durationSeconds": round(session.output.duration_seconds, 3),
            "videoCodec": session.output.video_codec,
            "audioCodec": session.output.audio_codec,
        }
    return {
        "phase": phase or (PHASES[state] if state else MISSING),
        "observedGeneration": generation,
        "sessionId": session.id if session else previous.get("sessionId"),
        "tracks": [
            {
                "name": t.name,
                "bytes": t.committed_size,
                "mimeType": t.mime_type,
                "finished": t.finished,
            }
            for t in tracks
        ],
        "bytes": recorded_bytes,
        "size": human_size(output["size"] if output else recorded_bytes),
        "duration": human_duration(output["durationSeconds"]) if output else None,
        "output": output,
        "progress": round(session.progress, 3) if session else 0.0,
        "expiresAt": rfc3339(from_ms(session.expires_at_ms))
        if session and session.expires_at_ms
        else previous.get("expiresAt"),
        "job": dict(job) if job else None,
        "compileRequest": compile_request,
        "message": tail(message) or None,
        "conditions": conditions(
            state, session, tail(message), previous.get("conditions") or [], now, generation
        ),
    }


def _stored(value: Any) -> Any:
    """A value as the API server keeps it: a merge patch's nulls delete, so none are stored."""
    if isinstance(value, Mapping):
        return {k: _stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value


def status_patch(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level status keys that changed, as a merge patch (its nulls delete keys)."""
    return {
        key: value
        for key, value in new.items()
        if _stored(value) != _stored(previous.get(key)) and (value is not None or key in previous)
    }


@dataclass(frozen=True)
class Event:
    warning: bool
    reason: str
    message: str


STORAGE_PHASES = frozenset({"Recording", "Recorded", "Compiling", "Ready", "Failed", "Expired"})
"""Phases whose Events come from storage's outbox (`session_event`): one source for what
webhooks and `kubectl describe` say."""


def events(previous: Mapping[str, Any], new: Mapping[str, Any]) -> list[Event]:
    """The Kubernetes Events a status change deserves: one per phase change the operator
    itself decides (a queued compile, a missing session, an invalid spec); the session's own
    transitions are storage's events (`session_event`)."""
    before, after = previous.get("phase"), new.get("phase")
    if before == after or after in STORAGE_PHASES:
        return []
    job = (new.get("job") or {}).get("name")
    via = f" (Job {job})" if job else ""
    reason, text = {
        "Recording": ("Recording", "recording"),
        "Recorded": ("Recorded", f"recording finished: {new.get('size')}"),
        "Queued": ("CompileQueued", f"compile queued{via}"),
        "Compiling": ("Compiling", f"compiling{via}"),
        "Ready": ("Compiled", f"compiled: {new.get('size')}, {new.get('duration')}"),
        "Failed": ("CompileFailed", f"compile failed: {new.get('message') or 'no message'}"),
        "Expired": ("Expired", "the session has expired"),
        MISSING: ("SessionMissing", "the session's data is not in storage"),
        INVALID: ("InvalidSpec", str(new.get("message") or "invalid spec")),
    }.get(str(after), (str(after), str(after)))
    return [Event(after in ("Failed", MISSING, INVALID), reason, tail(text, 1000))]


SESSION_EVENTS: dict[str, tuple[str, bool]] = {
    "session.created": ("SessionCreated", False),
    "recording.finished": ("Recorded", False),
    "compile.started": ("Compiling", False),
    "compile.ready": ("Compiled", False),
    "compile.failed": ("CompileFailed", True),
    "session.deleted": ("Deleted", False),
    "session.expired": ("Expired", False),
}


def session_event_message(event_type: str, data: Mapping[str, Any]) -> str:
    if event_type == "recording.finished":
        return f"recording finished: {', '.join(data.get('tracks') or []) or 'no tracks'}"
    if event_type == "compile.started":
        return f"compile attempt {data.get('attempt', '?')} started"
    if event_type == "compile.ready":
        size = int(data.get("size") or 0)
        seconds = float(data.get("durationSeconds") or 0.0)
        codecs = "/".join(c for c in (data.get("videoCodec"), data.get("audioCodec")) if c)
        return f"compiled: {size} bytes, {seconds:.1f} s, {codecs or 'no codecs'}"
    if event_type == "compile.failed":
        return f"compile failed: {data.get('message') or 'no message'}"
    return {
        "session.created": "session created in storage",
        "session.deleted": "session deleted from storage",
        "session.expired": "session expired and deleted from storage",
    }.get(event_type, event_type)


def session_event(
    event_id: str,
    event_type: str,
    data: Mapping[str, Any],
    resource: Mapping[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """A core/v1 Event on `resource` for one of storage's events. Named after the event's id,
    so posting it again (a restarted operator) is refused as a duplicate: each is posted once."""
    reason, warning = SESSION_EVENTS.get(event_type, (event_type, False))
    meta = resource["metadata"]
    name = f"{meta['name']}.{event_id.replace('_', '-').lower()}"[:253]
    stamp = rfc3339(at)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": resource.get("apiVersion"),
            "kind": resource.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "reason": reason,
        "message": tail(session_event_message(event_type, data), 1000),
        "type": "Warning" if warning else "Normal",
        "source": {"component": "tapedeck"},
        "reportingComponent": "tapedeck",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
