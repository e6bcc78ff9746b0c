"""The session manifest (`session.json`) and its conversion to the gRPC message."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from tapedeck._proto import storage_pb2 as pb
from tapedeck.sessions import State

STATE_TO_PB = {
    State.RECORDING: pb.SESSION_STATE_RECORDING,
    State.RECORDED: pb.SESSION_STATE_RECORDED,
    State.QUEUED: pb.SESSION_STATE_QUEUED,
    State.COMPILING: pb.SESSION_STATE_COMPILING,
    State.READY: pb.SESSION_STATE_READY,
    State.FAILED: pb.SESSION_STATE_FAILED,
    State.EXPIRED: pb.SESSION_STATE_EXPIRED,
}
PB_TO_STATE = {v: k for k, v in STATE_TO_PB.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


class TrackRecord(BaseModel):
    name: str
    mime_type: str = ""
    started_at: float = 0.0
    finished: bool = False
    updated_at_ms: int = 0


class OutputRecord(BaseModel):
    size: int = 0
    duration_seconds: float = 0.0
    etag: str = ""
    video_codec: str = ""
    audio_codec: str = ""


class NamedOutputRecord(BaseModel):
    size: int = 0
    etag: str = ""


class SessionRecord(BaseModel):
    """What survives a restart. Track sizes are not here: the file sizes on disk are the truth."""

    id: str
    state: State = State.RECORDING
    created_at_ms: int
    expires_at_ms: int
    updated_at_ms: int = Field(default_factory=now_ms)
    tracks: dict[str, TrackRecord] = Field(default_factory=dict)
    output: OutputRecord | None = None
    progress: float = 0.0
    error: str = ""
    compile_attempts: int = 0
    compile_generation: int = 0
    """Raised by every compile start; only the newest compile may write (a fence)."""
    title: str = ""
    """Empty: the default (the creation time), computed, so it never needs a migration."""
    named_outputs: dict[str, NamedOutputRecord] = Field(default_factory=dict)
    """What the current compile generation published beside the MP4 (poster, storyboard, HLS)."""
    replica: int = 0
    """The storage replica the session was placed on, its only writer (docs/decisions.md)."""
    pending_events: list[dict[str, Any]] = Field(default_factory=list)
    """Webhook events of the changes saved here that may not be in the outbox yet: saved with
    the change itself, cleared once the outbox has them, appended by the next start if a crash
    or a failed outbox write came between (a transactional outbox, at least once)."""


def to_pb(record: SessionRecord, sizes: dict[str, int], writing: bool) -> pb.Session:
    return pb.Session(
        id=record.id,
        state=STATE_TO_PB[record.state],
        created_at_ms=record.created_at_ms,
        expires_at_ms=record.expires_at_ms,
        updated_at_ms=record.updated_at_ms,
        tracks=[
            pb.Track(
                name=t.name,
                mime_type=t.mime_type,
                started_at=t.started_at,
                committed_size=sizes.get(t.name, 0),
                finished=t.finished,
                updated_at_ms=t.updated_at_ms,
            )
            for t in record.tracks.values()
        ],
        output=pb.Output(**record.output.model_dump()) if record.output else None,
        progress=record.progress,
        error=record.error,
        compile_attempts=record.compile_attempts,
        writing=writing,
        compile_generation=record.compile_generation,
        title=record.title,
        named_outputs=[
            pb.NamedOutput(name=name, size=out.size, etag=out.etag)
            for name, out in sorted(record.named_outputs.items())
        ],
        replica=record.replica,
    )
