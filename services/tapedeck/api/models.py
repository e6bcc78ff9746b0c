"""What the HTTP API returns (SPEC §5), built from storage's session messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

from tapedeck._proto import storage_pb2 as pb
from tapedeck.sessions import TITLE_MAX, TITLE_PATTERN, TRACKS, default_title
from tapedeck.storage.records import PB_TO_STATE


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FIRST_MS = (datetime(1, 1, 2, tzinfo=UTC) - _EPOCH) // timedelta(milliseconds=1)
_LAST_MS = (datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC) - _EPOCH) // timedelta(
    milliseconds=1
)


def ms_to_datetime(ms: int) -> datetime:
    """Clamped to what a datetime holds: a record written before TTLs were bounded (or by
    hand) must still list, never answer 500 (year out of range)."""
    return _EPOCH + timedelta(milliseconds=min(max(ms, _FIRST_MS), _LAST_MS))


class TrackView(_Model):
    name: str
    bytes: int
    mime_type: str
    started_at: float = Field(description="client epoch milliseconds of the recorder's start")
    finished: bool


class OutputView(_Model):
    size: int
    duration_seconds: float
    video_codec: str
    audio_codec: str


class ResourceView(_Model):
    """Cluster mode: the session's RecordingSession resource, as the operator reports it."""

    name: str
    phase: str | None
    job: str | None = Field(description="the compile Job of the latest compile request")
    message: str | None


class MediaView(_Model):
    """URLs of what the compile made beside the MP4 (signed like `downloadUrl` when a token
    is required); each null until it exists."""

    poster_url: str | None = None
    storyboard_url: str | None = Field(
        default=None, description="WebVTT index of the storyboard sprite (`#xywh=` cues)"
    )
    hls_url: str | None = Field(default=None, description="the HLS (fMP4) playlist")


class SessionView(_Model):
    id: str
    title: str = Field(description="its title; until someone names it, its creation time")
    state: str
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    tracks: list[TrackView]
    bytes: int
    writing: bool
    progress: float = Field(description="compile progress, 0 to 1")
    duration_seconds: float | None
    output: OutputView | None
    error: str | None
    compile_attempts: int
    download_url: str | None
    media: MediaView = Field(default_factory=MediaView)
    resource: ResourceView | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="cluster mode only: the RecordingSession resource's status",
    )


class SessionList(_Model):
    items: list[SessionView]
    next_cursor: str | None


_TITLE_DOC = (
    "1-200 characters, not blank, no control or invisible formatting characters (400 "
    "`invalid-title` otherwise); trimmed, runs of white space folded"
)


Title = Annotated[
    str,
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": TITLE_MAX, "pattern": TITLE_PATTERN}
    ),
]
"""Checked by `sessions.validate_title` (400 `invalid-title`); the document says the same."""


class NewSessionBody(_Model):
    title: Title | None = Field(
        default=None, description=f"{_TITLE_DOC}; default: the creation time"
    )


class SessionPatch(_Model):
    title: Title = Field(description=_TITLE_DOC)


class CreatedSession(_Model):
    id: str
    title: str
    upload_token: str
    created_at: datetime
    expires_at: datetime


class CompileAccepted(_Model):
    state: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def session_view(
    session: pb.Session,
    download_url: str | None,
    resource: ResourceView | None = None,
    media: MediaView | None = None,
) -> SessionView:
    state = PB_TO_STATE[session.state]
    output = None
    if session.HasField("output") and session.output.size:
        output = OutputView(
            size=session.output.size,
            duration_seconds=session.output.duration_seconds,
            video_codec=session.output.video_codec,
            audio_codec=session.output.audio_codec,
        )
    tracks = sorted(session.tracks, key=lambda t: TRACKS.index(t.name) if t.name in TRACKS else 9)
    return SessionView(
        id=session.id,
        title=session.title or default_title(session.created_at_ms),
        state=state.value,
        created_at=ms_to_datetime(session.created_at_ms),
        expires_at=ms_to_datetime(session.expires_at_ms),
        updated_at=ms_to_datetime(session.updated_at_ms),
        tracks=[
            TrackView(
                name=t.name,
                bytes=t.committed_size,
                mime_type=t.mime_type,
                started_at=t.started_at,
                finished=t.finished,
            )
            for t in tracks
        ],
        bytes=sum(t.committed_size for t in session.tracks),
        writing=session.writing,
        progress=session.progress,
        duration_seconds=output.duration_seconds if output else None,
        output=output,
        error=session.error or None,
        compile_attempts=session.compile_attempts,
        download_url=download_url if output else None,
        media=media if media is not None and output else MediaView(),
        resource=resource,
    )
