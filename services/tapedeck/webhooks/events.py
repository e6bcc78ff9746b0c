"""Which session transitions are webhook events, and what each carries (pure).

Storage's registry calls `transition_events(before, after)` on every manifest save, so every
path that changes a session (ingest, api, worker, operator, compile Job, sweeper) emits the
same events from one place.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

from pydantic import BaseModel

from tapedeck.sessions import State
from tapedeck.storage.records import SessionRecord, now_ms

EventType = Literal[
    "session.created",
    "recording.finished",
    "compile.started",
    "compile.ready",
    "compile.failed",
    "session.deleted",
    "session.expired",
]
EVENT_TYPES: tuple[EventType, ...] = (
    "session.created",
    "recording.finished",
    "compile.started",
    "compile.ready",
    "compile.failed",
    "session.deleted",
    "session.expired",
)

_FINISHED_RECORDING = frozenset({State.RECORDED, State.QUEUED, State.COMPILING})


class Event(BaseModel):
    """One outbox entry. `id` is the `webhook-id` of every delivery attempt (receivers
    deduplicate by it); `seq` orders the outbox."""

    id: str
    seq: int = 0
    type: EventType
    session_id: str
    timestamp_ms: int
    data: dict[str, Any]

    def body(self, extra: dict[str, Any] | None = None) -> bytes:
        """The JSON payload (Standard Webhooks' recommended `type`/`timestamp`/`data` shape);
        `extra` adds what is computed per attempt (the signed download URL)."""
        from datetime import UTC, datetime

        stamp = datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)
        payload = {
            "type": self.type,
            "timestamp": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "data": {**self.data, **(extra or {})},
        }
        return json.dumps(payload, separators=(",", ":")).encode()


def new_event_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def _event(kind: EventType, record: SessionRecord, **data: Any) -> Event:
    return Event(
        id=new_event_id(),
        type=kind,
        session_id=record.id,
        timestamp_ms=now_ms(),
        data={"sessionId": record.id, "state": record.state.value, **data},
    )


def transition_events(before: SessionRecord | None, after: SessionRecord) -> list[Event]:
    """The events a manifest change from `before` (None: new) to `after` means, in order."""
    if before is None:
        return [_event("session.created", after, expiresAtMs=after.expires_at_ms)]
    found: list[Event] = []
    if before.state == State.RECORDING and after.state in _FINISHED_RECORDING:
        found.append(_event("recording.finished", after, tracks=sorted(after.tracks)))
    if after.compile_generation > before.compile_generation:
        found.append(_event("compile.started", after, attempt=after.compile_attempts))
    if after.state != before.state:
        if after.state == State.READY:
            output = after.output
            found.append(
                _event(
                    "compile.ready",
                    after,
                    size=output.size if output else 0,
                    durationSeconds=output.duration_seconds if output else 0.0,
                    videoCodec=output.video_codec if output else "",
                    audioCodec=output.audio_codec if output else "",
                )
            )
        elif after.state == State.FAILED:
            found.append(_event("compile.failed", after, message=after.error))
        elif after.state == State.EXPIRED:
            found.append(_event("session.expired", after))
    return found


def gone_events(record: SessionRecord, now: int) -> list[Event]:
    """A deleted session's event: `session.expired` when its TTL had passed (the sweeper's and
    the operator's TTL deletes), else `session.deleted`. Decided by storage, so every deleter
    agrees without saying why it deletes. None for a session already `expired` (its state
    change said so)."""
    if record.state == State.EXPIRED:
        return []
    if record.expires_at_ms <= now:
        return [_event("session.expired", record)]
    return [_event("session.deleted", record)]
