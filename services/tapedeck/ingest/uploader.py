"""A resumable upload client for the ingest protocol, used by tests, benchmarks and scripts.

It keeps the whole unacknowledged tail, reconnects after a drop and resends from the
server's `committed`, exactly as the browser client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RETRY_CODES = {1001, 1006, 1011, 1012, 1013, 4408, 4503}
"""1012: the replica drains (SIGTERM), 1013: it is full; both: reconnect (through a Service,
to another replica) and resume from `committed`."""


class UploadRejected(Exception):
    def __init__(self, code: int, error: dict[str, Any] | None) -> None:
        message = (error or {}).get("message", "")
        super().__init__(f"closed {code}: {message}")
        self.code, self.error = code, error


@dataclass
class Attempt:
    """One connection: where it went, what `ready` and the last `ack` said, how it ended."""

    base: str
    ready: int | None = None
    last_ack: int | None = None
    close: int | None = None
    error: str | None = None


@dataclass
class UploadResult:
    session_id: str
    committed: int
    connections: int
    upload_token: str | None = None
    acks: list[int] = field(default_factory=list)
    error: dict[str, Any] | None = None  # the server's last `error` message
    attempts: list[Attempt] = field(default_factory=list)
    sent: int = 0  # the furthest byte ever sent (what the recorder had produced)


def ws_url(base: str, track: str, session_id: str | None, token: str | None) -> str:
    query = {k: v for k, v in (("session", session_id), ("token", token)) if v}
    return f"{base}/ws/{track}" + (f"?{urlencode(query)}" if query else "")


async def _recv_json(ws: ClientConnection) -> dict[str, Any]:
    while True:
        message = await ws.recv()
        if isinstance(message, str):
            data: dict[str, Any] = json.loads(message)
            return data


async def upload_track(
    base: str | Callable[[], str],
    track: str,
    data: bytes,
    *,
    session_id: str | None = None,
    token: str | None = None,
    mime_type: str = "video/webm;codecs=h264",
    started_at: float = 0.0,
    frame_bytes: int = 64 * 1024,
    max_connections: int = 100,
    after_frame: Callable[[ClientConnection, int], Awaitable[None]] | None = None,
    frame_interval: float = 0.0,
    stop: asyncio.Event | None = None,
) -> UploadResult:
    """Send `data` as one track and finish it, surviving drops. `after_frame(ws, offset)` lets a
    test cut the connection at a chosen point. `base` may be a function asked before every
    connection (a test's stand-in for a Service in front of several replicas). `stop` set is
    the recorder stopping: the track ends with the bytes sent so far (`result.sent`), resent
    from `committed` after a drop."""
    result = UploadResult(session_id or "", 0, 0)
    last: tuple[int, dict[str, Any] | None] = (1006, None)
    while result.connections < max_connections:
        result.connections += 1
        result.error = None
        attempt = Attempt(base if isinstance(base, str) else base())
        result.attempts.append(attempt)
        url = ws_url(attempt.base, track, result.session_id or None, token or result.upload_token)
        try:
            async with connect(url, compression=None, max_size=2**24) as ws:
                try:
                    await ws.send(
                        json.dumps(
                            {"type": "start", "mimeType": mime_type, "startedAt": started_at}
                        )
                    )
                    ready = await _recv_json(ws)
                    if ready.get("type") == "error":
                        result.error = ready
                    elif ready.get("type") == "ready":
                        attempt.ready = ready["committed"]
                        result.session_id = ready["sessionId"]
                        result.upload_token = ready.get("uploadToken") or result.upload_token
                        final = await _send_from(
                            ws,
                            ready["committed"],
                            data,
                            result,
                            frame_bytes,
                            after_frame,
                            frame_interval,
                            attempt,
                            stop,
                        )
                        if final.get("type") == "finished":
                            result.committed = final["committed"]
                            return result
                except ConnectionClosed:
                    pass
                error = await _error_received(ws, result)
                last = (ws.close_code or 1006, error)
        except (OSError, websockets.InvalidHandshake) as exc:
            last = (1006, {"message": f"cannot connect: {exc}"})
        attempt.close, attempt.error = last[0], (last[1] or {}).get("code")
        if last[0] not in RETRY_CODES:
            raise UploadRejected(*last)
        # Jitter: clients a replica refused (1013) or drained (1012) together do not all come
        # back at the same instant.
        await asyncio.sleep(min(1.0, 0.05 * result.connections) * random.uniform(0.5, 1.5))
    code, error = last
    raise UploadRejected(
        1006,
        {
            "message": f"gave up after {max_connections} connections; "
            f"the last closed {code}: {error}"
        },
    )


async def _send_from(
    ws: ClientConnection,
    committed: int,
    data: bytes,
    result: UploadResult,
    frame_bytes: int,
    after_frame: Callable[[ClientConnection, int], Awaitable[None]] | None,
    frame_interval: float,
    attempt: Attempt,
    stop: asyncio.Event | None,
) -> dict[str, Any]:
    """Send the bytes from `committed` on, then `finish`; returns the server's last message."""
    offset = result.committed = committed
    acks = asyncio.create_task(_collect(ws, result, attempt))

    def end() -> int:
        return result.sent if stop is not None and stop.is_set() else len(data)

    try:
        while offset < end():
            frame = data[offset : min(offset + frame_bytes, end())]
            await ws.send(frame)
            offset += len(frame)
            result.sent = max(result.sent, offset)
            if after_frame is not None:
                await after_frame(ws, offset)
            if frame_interval:
                await asyncio.sleep(frame_interval)
        await ws.send(json.dumps({"type": "finish"}))
        return await acks
    finally:
        acks.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await acks  # it must have left `recv` before anyone reads again


async def _error_received(ws: ClientConnection, result: UploadResult) -> dict[str, Any] | None:
    """The server's `error` message, if it sent one before closing: seen by the ack reader, or
    still queued behind a send of ours that failed first."""
    await ws.wait_closed()
    with contextlib.suppress(ConnectionClosed):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and json.loads(message).get("type") == "error":
                result.error = json.loads(message)
    return result.error


async def _collect(ws: ClientConnection, result: UploadResult, attempt: Attempt) -> dict[str, Any]:
    """Reads acks until `finished` or `error`; the connection closing raises ConnectionClosed."""
    while True:
        message = await _recv_json(ws)
        if message.get("type") == "ack":
            attempt.last_ack = message["committed"]
            result.committed = message["committed"]
            result.acks.append(message["committed"])
        else:
            if message.get("type") == "error":
                result.error = message
            return message
