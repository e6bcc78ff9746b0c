"""Session ids, track names and states: the vocabulary every service shares (SPEC §4)."""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
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

OUTPUT_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,39}\.(jpg|vtt|m3u8|m4s|mp4)$"
_OUTPUT_NAME = re.compile(OUTPUT_NAME_PATTERN)
"""A compile's named outputs beside the MP4 (poster, storyboard, HLS playlist and segments):
one flat name, so it is a file name and an object key as it stands, never a path."""

POSTER = "poster.jpg"
STORYBOARD_SPRITE = "storyboard.jpg"
STORYBOARD_VTT = "storyboard.vtt"
HLS_PLAYLIST = "hls.m3u8"

TITLE_MAX = 200


def is_output_name(value: str) -> bool:
    return isinstance(value, str) and _OUTPUT_NAME.fullmatch(value) is not None


def is_object(value: str) -> bool:
    """A track, the MP4 (`output`) or a named output."""
    return value in OBJECTS or is_output_name(value)


def is_output(value: str) -> bool:
    """What only the compile of the current generation may write."""
    return value == OUTPUT or is_output_name(value)


_NOT_IN_TITLES = (
    r"\x00-\x1f\x7f-\x9f"  # C0 and C1 controls
    r"\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"  # format
)
TITLE_PATTERN = rf"^[^{_NOT_IN_TITLES}]*[^{_NOT_IN_TITLES}\s][^{_NOT_IN_TITLES}]*$"
"""Not blank; no control or invisible format characters (bidi overrides, zero-width): they
would reach a `Content-Disposition` header, a file name and a terminal. Lone surrogates are
refused apart (JSON can carry one; the fuzzer's regex engine generates none). The api's
OpenAPI document declares this same pattern."""
_TITLE = re.compile(TITLE_PATTERN)


class InvalidTitle(ValueError):
    pass


def validate_title(value: str) -> str:
    """A title as people type it: 1-200 characters of `TITLE_PATTERN`, trimmed, with runs
    of white space folded into one space."""
    if not isinstance(value, str):
        raise InvalidTitle("the title must be a string")
    if len(value) > TITLE_MAX:
        raise InvalidTitle(f"the title has {len(value)} characters; at most {TITLE_MAX}")
    if not value.strip():
        raise InvalidTitle("the title is empty")
    if any("\ud800" <= c <= "\udfff" for c in value) or not _TITLE.search(
        value
    ):  # JSON Schema's reading of the pattern (a trailing \n passes)
        raise InvalidTitle("the title contains control or invisible formatting characters")
    return " ".join(value.split())


def default_title(created_at_ms: int) -> str:
    """A session's title until someone names it: when it was created (UTC)."""
    when = datetime.fromtimestamp(min(max(0, created_at_ms), 253_402_300_799_000) / 1000, UTC)
    return f"Recording {when:%Y-%m-%d %H:%M} UTC"


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
