"""What ingest holds of a stream between two of its frames: nothing of the last one.

A browser sends a frame a second; a local variable kept across the wait for the next one
holds a whole frame per stream for that second (at 300 streams of 2.5 Mbit/s, 94 MB:
docs/performance.md). Ingest and storage run in this process, on loopback, so tracemalloc
sees their Python allocations."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tracemalloc
from pathlib import Path

import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from harness import free_port
from storage_fixtures import storage_serving
from tapedeck.cli import web_server_options
from tapedeck.settings import Settings
from tapedeck.webapp import create_app

SIZE = 300_000


async def _send_one_frame(ws: ClientConnection, frame: bytes) -> None:
    await ws.send(json.dumps({"type": "start", "mimeType": "video/webm", "startedAt": 1.0}))
    assert json.loads(await ws.recv())["type"] == "ready"
    await ws.send(frame)
    while json.loads(await ws.recv()).get("committed") != SIZE:
        pass


async def test_ingest_holds_none_of_a_streams_last_frame_while_it_waits_for_the_next(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        storage_addr=f"127.0.0.1:{free_port()}",
        port=free_port(),
        sessions_per_minute=0,
    )
    streams = 8
    frame = os.urandom(SIZE)  # one block, shared by every stream
    async with storage_serving(settings):
        options = {**web_server_options(settings), "log_level": "warning"}
        config = uvicorn.Config(create_app(settings, ("ingest",)), **options)
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.02)
            tracemalloc.start()
            sockets = [
                await connect(f"ws://127.0.0.1:{settings.port}/ws/video", compression=None)
                for _ in range(streams)
            ]
            try:
                await asyncio.gather(*(_send_one_frame(ws, frame) for ws in sockets))
                await asyncio.sleep(0.2)
                gc.collect()
                big = [t for t in tracemalloc.take_snapshot().traces if t.size >= SIZE]
            finally:
                tracemalloc.stop()
                for ws in sockets:
                    await ws.close()
        finally:
            server.should_exit = True
            await serving
    assert len(big) <= 2, f"{len(big)} frame-sized blocks held by {streams} waiting streams"
