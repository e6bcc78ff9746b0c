"""A WebSocket load client for the ingest protocol, and the bare-sink baseline server.

The client runs in separate processes (so its CPU is not the server's), each an asyncio loop
with many connections. A connection sends `start`, waits for `ready`, then one frame every
second (`paced`) or back to back within a window of unacknowledged frames (`saturate`), then
`finish`, and measures each frame's ack latency: from sending it to the first `ack` covering it.
In `storm` mode a connection is not opened ahead: connect, `start` and the first frame all fall
within the same second for every stream (an ingest restart's reconnect storm), and a stream
resumes from the `committed` that `ready` reports (`prefill` left one frame there, unfinished).
Frame k of stream s is `k` (8 bytes) + stream s's own random bytes, so the stored files can be
checked byte for byte afterwards.

The bare sink speaks the same protocol with the `websockets` library in one process: append
the frame to a file, fdatasync it (in a thread, as any asyncio server would), ack. It is the
ceiling of this machine for "durable WebSocket ingest in Python".
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FRAME_BYTES = 2_500_000 // 8  # 1 s of a 2.5 Mbit/s recording


def stream_body(stream: int, size: int = FRAME_BYTES) -> bytes:
    return random.Random(stream).randbytes(size)


def frame(body: bytes, k: int) -> bytes:
    return k.to_bytes(8, "big") + body[8:]


def check_file(path: Path, stream: int, frames: int, size: int = FRAME_BYTES) -> int:
    """Bytes missing or wrong in a stored stream (0: every frame is there, in order)."""
    body = stream_body(stream, size)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return frames * size
    bad = abs(len(data) - frames * size)
    for k in range(min(frames, len(data) // size)):
        if data[k * size : (k + 1) * size] != frame(body, k):
            bad += size
    return bad


@dataclass
class Target:
    url: str  # full ws:// URL including query
    stream: int


@dataclass
class StreamResult:
    sent: int = 0
    committed: int = 0
    frames: int = 0
    latencies: list[float] = field(default_factory=list)
    error: str = ""
    ready: float = 0.0  # connect → `ready`, seconds


async def _one(
    target: Target, mode: str, seconds: float, start_at: float, window: int
) -> StreamResult:
    from websockets.asyncio.client import connect

    result = StreamResult()
    body = stream_body(target.stream)
    pending: deque[tuple[int, float]] = deque()  # (end offset, sent at)
    acked = asyncio.Event()
    # Wall-clock start shared by every process; each stream gets its own phase.
    phase = random.Random(target.stream).random() if mode in ("paced", "storm") else 0.0
    t0 = time.perf_counter() + max(0.0, start_at - time.time()) + phase
    if mode == "storm":  # connect only now: the whole handshake falls in the storm's second
        await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
    try:
        connecting = time.perf_counter()
        async with connect(
            target.url, compression=None, max_size=2**24, open_timeout=60, ping_interval=None
        ) as ws:
            await ws.send(json.dumps({"type": "start", "mimeType": "video/webm", "startedAt": 1.0}))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                raise RuntimeError(f"not ready: {ready}")
            result.ready = time.perf_counter() - connecting
            first = int(ready.get("committed", 0)) // FRAME_BYTES  # resumed: from committed on
            result.sent = result.committed = first * FRAME_BYTES
            if mode == "prefill":  # one frame, durable, then away without `finish`
                await ws.send(frame(body, 0))
                while json.loads(await ws.recv()).get("committed", 0) < FRAME_BYTES:
                    pass
                result.sent = result.committed = FRAME_BYTES
                result.frames = 1
                return result

            async def reader() -> dict[str, Any]:
                while True:
                    message = json.loads(await ws.recv())
                    if message.get("type") == "ack":
                        now = time.perf_counter()
                        result.committed = message["committed"]
                        while pending and pending[0][0] <= result.committed:
                            result.latencies.append(now - pending.popleft()[1])
                        acked.set()
                    else:
                        return dict(message)

            acks = asyncio.create_task(reader())
            if mode == "storm":  # the first frame right after `ready`, then one a second
                t0 = time.perf_counter() - first
            await asyncio.sleep(max(0.0, t0 - time.perf_counter()))
            k = first
            while True:
                if mode in ("paced", "storm"):
                    if k >= seconds:
                        break
                    await asyncio.sleep(max(0.0, t0 + k - time.perf_counter()))
                else:
                    if time.perf_counter() - t0 >= seconds:
                        break
                    while len(pending) >= window:
                        acked.clear()
                        await acked.wait()
                data = frame(body, k)
                await ws.send(data)
                result.sent += len(data)
                pending.append((result.sent, time.perf_counter()))
                k += 1
            result.frames = k - first
            await ws.send(json.dumps({"type": "finish"}))
            final = await asyncio.wait_for(acks, 120)
            if final.get("type") != "finished":
                raise RuntimeError(f"finish answered {final}")
            result.committed = final["committed"]
    except Exception as exc:  # a lost stream is a result, not a crash of the benchmark
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return result


async def _many(
    targets: list[Target], mode: str, seconds: float, start_at: float, window: int
) -> list[StreamResult]:
    return list(await asyncio.gather(*(_one(t, mode, seconds, start_at, window) for t in targets)))


def _client_main(
    targets: list[Target],
    mode: str,
    seconds: float,
    start_at: float,
    window: int,
    out: multiprocessing.Queue[list[tuple[int, StreamResult]]],
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results = asyncio.run(_many(targets, mode, seconds, start_at, window))
    out.put([(t.stream, r) for t, r in zip(targets, results, strict=True)])


def run_clients(
    targets: list[Target],
    mode: str = "paced",
    seconds: float = 60,
    processes: int = 2,
    window: int = 2,
    on_started: Any = None,
) -> list[StreamResult]:
    """Runs the load in `processes` client processes; returns one result per target."""
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[tuple[int, StreamResult]]] = ctx.Queue()
    # Time to connect everyone first (in `storm` mode, to start the client processes).
    start_at = time.time() + 3.0 + len(targets) * 0.01
    shares = [targets[i::processes] for i in range(processes)]
    procs = [
        ctx.Process(target=_client_main, args=(share, mode, seconds, start_at, window, queue))
        for share in shares
        if share
    ]
    for proc in procs:
        proc.start()
    if on_started is not None:
        on_started([p.pid for p in procs], start_at)
    by_stream: dict[int, StreamResult] = {}
    for _ in procs:
        by_stream.update(queue.get())
    for proc in procs:
        proc.join()
    return [by_stream[t.stream] for t in targets]


# --- the bare sink ----------------------------------------------------------------------------


async def _sink(directory: Path, port: int) -> None:
    from urllib.parse import parse_qs, urlsplit

    from websockets.asyncio.server import ServerConnection, serve

    async def handler(ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        name = query.get("session", ["anonymous"])[0]
        start = json.loads(await ws.recv())
        assert start["type"] == "start"
        fd = os.open(directory / f"{name}.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        committed = os.fstat(fd).st_size  # a reconnect resumes where the file ends

        def append(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)

        try:
            await ws.send(json.dumps({"type": "ready", "sessionId": name, "committed": committed}))
            async for message in ws:
                if isinstance(message, bytes):
                    await asyncio.to_thread(append, message)
                    committed += len(message)
                    await ws.send(json.dumps({"type": "ack", "committed": committed}))
                else:
                    await ws.send(json.dumps({"type": "finished", "committed": committed}))
                    await ws.close()
                    return
        finally:
            os.close(fd)

    async with serve(
        handler, "127.0.0.1", port, compression=None, max_size=2**24, ping_interval=None
    ):
        await asyncio.Future()


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "sink":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_sink(Path(sys.argv[2]), int(sys.argv[3])))
