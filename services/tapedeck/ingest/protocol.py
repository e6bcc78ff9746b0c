"""The WebSocket ingest protocol (SPEC §6) as a pure state machine: no sockets, no storage.

`TrackStream` follows one connection: it parses client messages, refuses what is out of
order, keeps the next write offset and the last acknowledged size, and says which close code
an error deserves. `ingest.app` does the I/O around it.
"""

from __future__ import annotations

import json
from enum import Enum, IntEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tapedeck.sessions import MAX_STARTED_AT

MAX_TEXT_BYTES = 4096


class Close(IntEnum):
    NORMAL = 1000
    RESTART = 1012
    """Service restart: this replica is draining (SIGTERM); reconnect at once, elsewhere."""
    TRY_LATER = 1013
    """Try again later: this replica is at `TAPEDECK_INGEST_MAX_STREAMS`; back off, retry."""
    BAD_MESSAGE = 4400
    BAD_TOKEN = 4401
    NOT_FOUND = 4404
    IDLE = 4408
    CONFLICT = 4409
    TOO_LARGE = 4413
    RATE_LIMITED = 4429
    UNAVAILABLE = 4503


class ProtocolError(Exception):
    """Ends the connection: an `error` message with `code` and `message`, then `close`."""

    def __init__(self, close: Close, code: str, message: str) -> None:
        super().__init__(message)
        self.close, self.code, self.message = close, code, message


# --- client → server -------------------------------------------------------------------------


class StartMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["start"]
    mimeType: str = Field(min_length=1, max_length=200)
    startedAt: float = Field(ge=0, le=MAX_STARTED_AT)
    """The recorder's start, epoch ms; 0: unknown."""


class FinishMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["finish"]


ClientMessage = Annotated[StartMessage | FinishMessage, Field(discriminator="type")]
_client_message: TypeAdapter[StartMessage | FinishMessage] = TypeAdapter(ClientMessage)


def parse_client_message(text: str) -> StartMessage | FinishMessage:
    if len(text.encode()) > MAX_TEXT_BYTES:
        raise ProtocolError(
            Close.TOO_LARGE,
            "message-too-large",
            f"text messages are limited to {MAX_TEXT_BYTES} bytes",
        )
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError(
            Close.BAD_MESSAGE, "malformed-json", "message is not valid JSON"
        ) from None
    if not isinstance(data, dict) or "type" not in data:
        raise ProtocolError(Close.BAD_MESSAGE, "bad-message", 'expected a JSON object with "type"')
    if data["type"] not in ("start", "finish"):
        raise ProtocolError(
            Close.BAD_MESSAGE, "unknown-type", f"unknown message type {str(data['type'])[:40]!r}"
        )
    try:
        return _client_message.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "message"
        raise ProtocolError(Close.BAD_MESSAGE, "bad-message", f"{where}: {first['msg']}") from None


# --- server → client -------------------------------------------------------------------------


def ready(session_id: str, track: str, committed: int, upload_token: str | None) -> str:
    message: dict[str, object] = {
        "type": "ready",
        "sessionId": session_id,
        "track": track,
        "committed": committed,
    }
    if upload_token:
        message["uploadToken"] = upload_token
    return json.dumps(message)


def ack(committed: int) -> str:
    return json.dumps({"type": "ack", "committed": committed})


def finished(committed: int) -> str:
    return json.dumps({"type": "finished", "committed": committed})


def error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


# --- one connection --------------------------------------------------------------------------


class Phase(Enum):
    AWAIT_START = "await-start"
    OPENING = "opening"
    STREAMING = "streaming"
    FINISHING = "finishing"
    FINISHED = "finished"


class TrackStream:
    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.phase = Phase.AWAIT_START
        self.offset = 0  # next byte the client sends = bytes handed to storage
        self.committed = 0  # bytes storage says are durable
        self.start: StartMessage | None = None

    def on_text(self, text: str) -> StartMessage | FinishMessage:
        message = parse_client_message(text)
        if isinstance(message, StartMessage):
            if self.phase != Phase.AWAIT_START:
                raise ProtocolError(Close.BAD_MESSAGE, "unexpected-start", "start was already sent")
            self.phase = Phase.OPENING
            self.start = message
        else:
            if self.phase != Phase.STREAMING:
                raise ProtocolError(
                    Close.BAD_MESSAGE,
                    "unexpected-finish",
                    f"finish is not allowed while {self.phase.value}",
                )
            self.phase = Phase.FINISHING
        return message

    def on_ready(self, committed: int) -> None:
        self.phase = Phase.STREAMING
        self.offset = self.committed = committed

    def on_frame(self, size: int) -> int:
        """Accept `size` bytes; returns the offset they are written at."""
        if self.phase in (Phase.AWAIT_START, Phase.OPENING):
            raise ProtocolError(
                Close.BAD_MESSAGE,
                "binary-before-start",
                "send a start message before any media bytes",
            )
        if self.phase != Phase.STREAMING:
            raise ProtocolError(Close.CONFLICT, "finished", "the track is finished; no more bytes")
        if size > self.max_frame_bytes:
            raise ProtocolError(
                Close.TOO_LARGE,
                "frame-too-large",
                f"frame of {size} bytes exceeds the limit of {self.max_frame_bytes}",
            )
        if size == 0:
            raise ProtocolError(Close.BAD_MESSAGE, "empty-frame", "binary frames must not be empty")
        at = self.offset
        self.offset += size
        return at

    def on_ack(self, committed: int) -> bool:
        """Record storage's durable size; True when the client should hear of it."""
        if committed <= self.committed:
            return False
        self.committed = committed
        return True

    def on_finished(self) -> None:
        self.phase = Phase.FINISHED

    def silence_is_idle(self, acks_stuck: bool) -> bool:
        """Whether a client that sent nothing for a while is idle rather than waiting for us:
        it is waiting while storage still owes it acks, unless it does not read the acks we
        send (`acks_stuck`). Before `ready` and after `finish` ingest reads nothing."""
        return self.phase == Phase.STREAMING and (self.inflight == 0 or acks_stuck)

    @property
    def inflight(self) -> int:
        return self.offset - self.committed
