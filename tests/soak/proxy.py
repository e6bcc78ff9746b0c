"""A TCP proxy on loopback between the soak's clients and the web port, for network faults.

`drop()` closes every live connection at once (both sides, no close frame: the network
vanished); `stall(seconds)` stops forwarding in both directions for a while, the way a
congested or flapping link holds bytes back, then lets them through in order.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultyProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.port = 0
        self.connections: set[asyncio.Task[None]] = set()
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.drop()
        if self.connections:
            await asyncio.wait(self.connections)
        if self._server is not None:
            await self._server.wait_closed()

    def drop(self) -> int:
        """Close every live connection; returns how many there were."""
        live = [task for task in self.connections if not task.done()]
        for task in live:
            task.cancel()
        return len(live)

    async def stall(self, seconds: float) -> None:
        self.flowing.clear()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.flowing.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        self.accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self.target_host, self.target_port)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, upstream))
                group.create_task(self._pipe(up_reader, writer))
        except (OSError, ExceptionGroup, asyncio.CancelledError):
            pass  # refused, reset, or dropped on purpose: close both sides below
        finally:
            self.connections.discard(task)
            for side in (writer, upstream):
                if side is not None:
                    side.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            await self.flowing.wait()
            sink.write(data)
            await sink.drain()
        with contextlib.suppress(OSError):
            if sink.can_write_eof():
                sink.write_eof()
