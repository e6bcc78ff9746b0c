"""A full volume: writers hear 4503 with a message, nothing committed is damaged, reads and
other sessions keep working, and writing resumes once space returns."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from backend_stores import small_tmpfs
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness import Stack, make_stack
from tapedeck.ingest.uploader import upload_track

pytestmark = pytest.mark.faults
MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_tmpfs(tmp_path / "disk", 6 * MiB) as mount:
        yield mount


@pytest.fixture
def full_stack(small_disk: Path, tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(tmp_path)
    stack.env["TAPEDECK_DATA_DIR"] = str(small_disk / "recordings")
    stack.data_dir = small_disk / "recordings"
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


async def test_disk_full_then_space_returns(full_stack: Stack) -> None:
    stack = full_stack
    api = httpx.Client(base_url=stack.base_url)
    first = api.post("/api/sessions").json()
    kept = os.urandom(3 * MiB)
    await upload_track(
        stack.ws_base,
        "audio",
        kept,
        session_id=first["id"],
        token=first["uploadToken"],
        frame_bytes=256 * 1024,
    )

    second = api.post("/api/sessions").json()
    source = os.urandom(int(3.5 * MiB))
    url = f"{stack.ws_base}/ws/video?session={second['id']}&token={second['uploadToken']}"
    acked, error = 0, None
    async with connect(url, compression=None) as ws:
        await ws.send(json.dumps({"type": "start", "mimeType": "video/webm", "startedAt": 1}))
        await ws.recv()
        try:
            for offset in range(0, len(source), 128 * 1024):
                await ws.send(source[offset : offset + 128 * 1024])
                message = json.loads(await ws.recv())
                if message["type"] == "ack":
                    acked = message["committed"]
                else:
                    error = message
                    break
            await ws.wait_closed()
        except ConnectionClosed:
            pass
        close_code = ws.close_code
    assert error is not None and error["code"] == "storage-full", error
    assert close_code == 4503 and "space" in error["message"]
    on_disk = (stack.data_dir / second["id"] / "video.webm").read_bytes()
    assert len(on_disk) >= acked > 0 and on_disk[:acked] == source[:acked]
    # Storage still serves: health, reads, the other session.
    assert api.get("/readyz").status_code == 200
    assert (stack.data_dir / first["id"] / "audio.webm").read_bytes() == kept
    assert api.get(f"/api/sessions/{first['id']}").json()["tracks"][0]["bytes"] == len(kept)

    assert api.delete(f"/api/sessions/{first['id']}").status_code == 204  # space returns
    result = await upload_track(
        stack.ws_base,
        "video",
        source,
        session_id=second["id"],
        token=second["uploadToken"],
        frame_bytes=128 * 1024,
    )
    assert result.committed == len(source)
    assert (stack.data_dir / second["id"] / "video.webm").read_bytes() == source
    api.close()
