"""Session ids, track names and states: the vocabulary every service shares (SPEC §4)."""

from __future__ import annotations

import math
import re
import uuid
from enum import StrEnum

SESSION_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{7,62}$"
_SESSION_ID = re.compile(SESSION_ID_PATTERN)

MAX_STARTED_AT = 7_258_118_400_000
"""2200-01-01 in epoch ms: a `startedAt` beyond is no browser's clock (1e15 was accepted,
and became years of offset in the compile; compiler/plan.py bounds offsets too)."""


def valid_started_at(value: float) -> bool:
    """A track's `startedAt`: epoch ms of a browser's clock, or 0 for unknown."""
    return math.isfinite(value) and 0 <= value <= MAX_STARTED_AT


TRACKS = ("video", "audio", "screen")
OUTPUT = "output"
OBJECTS = (*TRACKS, OUTPUT)


class InvalidSessionId(ValueError):
    pass


class State(StrEnum):
    RECORDING = "recording"
    RECORDED = "recorded"
    QUEUED = "queued"
    COMPILING = "compiling"
    READY = "ready"
    FAILED = "failed"
    EXPIRED = "expired"


def new_session_id() -> str:
    return str(uuid.uuid4())


def validate_session_id(value: str) -> str:
    """The only way a session id may become part of a path, a URL or a resource name."""
    if not isinstance(value, str) or not _SESSION_ID.fullmatch(value):
        raise InvalidSessionId(
            f"invalid session id {value[:80]!r}: expected 8-63 characters of a-z, 0-9 and '-'"
            if isinstance(value, str)
            else "invalid session id"
        )
    return value


def is_valid_session_id(value: str) -> bool:
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def track_file_name(track: str) -> str:
    """Seed layout: `video.webm`, `audio.webm`, `screen.webm` whatever the container."""
    if track not in TRACKS:
        raise ValueError(f"unknown track {track!r}: expected one of {', '.join(TRACKS)}")
    return f"{track}.webm"
