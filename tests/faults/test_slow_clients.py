"""A stalled client cannot grow server memory without bound."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx
import psutil
import pytest
from websockets.asyncio.client import connect

from harness import Stack, make_stack, record_session, wait_settled

pytestmark = pytest.mark.faults
MiB = 1024 * 1024


def rss(stack: Stack) -> int:
    assert stack.web.process
    return int(psutil.Process(stack.web.process.pid).memory_info().rss)


async def test_writer_that_never_reads_acks(tmp_path: Path) -> None:
    """The client sends as fast as it can and never reads: acks back up, ingest stops
    reading, TCP pushes back, and the client's own send blocks."""
    stack = make_stack(tmp_path, max_inflight_bytes=str(4 * MiB)).start()
    try:
        created = httpx.post(f"{stack.base_url}/api/sessions").json()
        url = f"{stack.ws_base}/ws/video?session={created['id']}&token={created['uploadToken']}"
        before = rss(stack)
        frame = os.urandom(256 * 1024)
        sent = 0
        async with connect(url, compression=None, max_queue=1, write_limit=64 * 1024) as ws:
            await ws.send(json.dumps({"type": "start", "mimeType": "video/webm", "startedAt": 1}))
            await ws.recv()
            ws.transport.pause_reading()  # a client that never reads again

            async def flood() -> None:
                nonlocal sent
                while True:
                    await ws.send(frame)
                    sent += len(frame)

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(flood(), 4)
            growth = rss(stack) - before
            on_disk = (stack.data_dir / created["id"] / "video.webm").stat().st_size
            ws.transport.abort()
        # Either the stream blocked early, or whatever was sent went to disk, not to RAM.
        assert growth < 48 * MiB, f"web RSS grew {growth / MiB:.1f} MiB after {sent / MiB:.0f} MiB"
        assert sent - on_disk < 64 * MiB
        assert httpx.get(f"{stack.base_url}/readyz").status_code == 200
    finally:
        stack.stop()


async def test_download_reader_that_stalls(stack: Stack, h264_webm: Path) -> None:
    """A download nobody reads: the api pauses its storage read instead of buffering."""
    with httpx.Client(base_url=stack.base_url, timeout=60) as api:
        sid = await record_session(stack.ws_base, api, h264_webm)
        assert api.post(f"/api/compile-video/{sid}").status_code == 202
        assert wait_settled(api, sid)[-1]["state"] == "ready"
    before = rss(stack)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port, limit=1024)
    writer.transport.set_write_buffer_limits(0)
    for _ in range(50):  # fifty stalled downloads of the same file
        writer.write(f"GET /api/download/{sid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    reader._transport.pause_reading()  # type: ignore[attr-defined]
    await asyncio.sleep(3)
    growth = rss(stack) - before
    writer.close()
    assert growth < 32 * MiB, f"web RSS grew {growth / MiB:.1f} MiB"
    assert httpx.get(f"{stack.base_url}/readyz").status_code == 200
