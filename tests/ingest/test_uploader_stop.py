"""The upload client's `stop`: a recorder that stops ends its track with exactly the bytes it
had sent, resent from `committed` after a drop (the rolling-update test's clients stop so).
Real storage and web processes on loopback."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection

from harness import make_stack
from tapedeck.ingest.uploader import upload_track

KiB = 1024


async def test_stop_ends_the_track_with_what_was_sent_even_after_a_drop(tmp_path: Path) -> None:
    stack = make_stack(tmp_path).start()
    try:
        with httpx.Client(base_url=stack.base_url) as client:
            body = client.post("/api/sessions").json()
        data = os.urandom(100 * 10 * KiB)
        stop = asyncio.Event()
        dropped: list[int] = []

        async def after_frame(ws: ClientConnection, offset: int) -> None:
            if offset >= 5 * 10 * KiB and not stop.is_set():
                stop.set()  # the recorder stops here...
                dropped.append(offset)
                ws.transport.abort()  # ...and the network drops before `finish`

        result = await upload_track(
            stack.ws_base,
            "video",
            data,
            session_id=body["id"],
            token=body["uploadToken"],
            frame_bytes=10 * KiB,
            after_frame=after_frame,
            stop=stop,
        )
        assert dropped == [5 * 10 * KiB] and result.connections == 2
        assert result.sent == result.committed == 5 * 10 * KiB
        assert (stack.data_dir / body["id"] / "video.webm").read_bytes() == data[: result.sent]
    finally:
        stack.stop()
