"""A resumable upload client for the ingest protocol, used by tests, benchmarks and scripts.

It keeps the whole unacknowledged tail, reconnects after a drop and resends from the
server's `committed`, exactly as the browser client does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

RETRY_CODES = {1001, 1006, 1011, 1012, 4503}


class UploadRejected(Exception):
    def __init__(self, code: int, error: dict[str, Any] | None) -> None:
        message = (error or {}).get("message", "")
        super().__init__(f"closed {code}: {message}")
        self.code, self.error = code, error


@dataclass
class UploadResult:
    session_id: str
    committed: int
    connections: int
    upload_token: str | None = None
    acks: list[int] = field(default_factory=list)


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
    base: str,
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
) -> UploadResult:
    """Send `data` as one track and finish it, surviving drops. `after_frame(ws, offset)` lets a
    test cut the connection at a chosen point."""
    result = UploadResult(session_id or "", 0, 0)
    while result.connections < max_connections:
        result.connections += 1
        url = ws_url(base, track, result.session_id or None, token or result.upload_token)
        try:
            async with connect(url, compression=None, max_size=2**24) as ws:
                await ws.send(
                    json.dumps({"type": "start", "mimeType": mime_type, "startedAt": started_at})
                )
                ready = await _recv_json(ws)
                if ready.get("type") != "ready":
                    await _rejected(ws, ready)
                    continue
                result.session_id = ready["sessionId"]
                result.upload_token = ready.get("uploadToken") or result.upload_token
                offset = result.committed = ready["committed"]
                acks = asyncio.create_task(_collect(ws, result))
                try:
                    while offset < len(data):
                        frame = data[offset : offset + frame_bytes]
                        await ws.send(frame)
                        offset += len(frame)
                        if after_frame is not None:
                            await after_frame(ws, offset)
                        if frame_interval:
                            await asyncio.sleep(frame_interval)
                    await ws.send(json.dumps({"type": "finish"}))
                    final = await acks
                finally:
                    acks.cancel()
                if final.get("type") == "finished":
                    result.committed = final["committed"]
                    return result
                await _rejected(ws, final)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else 1006
            if code not in RETRY_CODES:
                raise UploadRejected(code, None) from None
        except (OSError, websockets.InvalidHandshake):
            pass
        await asyncio.sleep(min(1.0, 0.05 * result.connections))
    raise UploadRejected(1006, {"message": f"gave up after {max_connections} connections"})


async def _rejected(ws: ClientConnection, error: dict[str, Any]) -> None:
    """The server sent an error: give up unless its close code says to come back."""
    await ws.wait_closed()
    code = ws.close_code or 1006
    if code not in RETRY_CODES:
        raise UploadRejected(code, error)


async def _collect(ws: ClientConnection, result: UploadResult) -> dict[str, Any]:
    """Reads acks until `finished` or `error`; the connection closing raises ConnectionClosed."""
    while True:
        message = await _recv_json(ws)
        if message.get("type") == "ack":
            result.committed = message["committed"]
            result.acks.append(message["committed"])
        else:
            return message
