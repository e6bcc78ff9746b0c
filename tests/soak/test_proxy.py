"""The soak's faulty proxy forwards both ways, drops every live connection at once, and holds
bytes back while stalled, then delivers them in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from soak.proxy import FaultyProxy


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[FaultyProxy]:
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    proxy = await FaultyProxy("127.0.0.1", server.sockets[0].getsockname()[1]).start()
    yield proxy
    await proxy.close()
    server.close()
    await server.wait_closed()


async def test_forwards_both_ways(proxy: FaultyProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    payload = bytes(range(256)) * 1000
    writer.write(payload)
    assert await reader.readexactly(len(payload)) == payload
    writer.close()


async def test_drop_closes_every_live_connection(proxy: FaultyProxy) -> None:
    pairs = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
    for reader, writer in pairs:
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
    assert proxy.drop() == 3
    for reader, writer in pairs:
        with contextlib.suppress(ConnectionError):
            assert await reader.read() == b""  # closed (EOF or reset), nothing more
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # new ones work
    writer.write(b"again")
    assert await reader.readexactly(5) == b"again"
    writer.close()


async def test_stall_holds_bytes_back_then_delivers_them_in_order(proxy: FaultyProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    proxy.flowing.clear()  # what stall() does for its duration
    writer.write(b"first")
    writer.write(b"second")
    with pytest.raises(TimeoutError):  # nothing gets through while stalled
        await asyncio.wait_for(reader.read(1), 0.3)
    proxy.flowing.set()
    assert await reader.readexactly(11) == b"firstsecond"
    writer.close()


async def test_stall_ends_and_the_held_bytes_arrive(proxy: FaultyProxy) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    stalled = asyncio.create_task(proxy.stall(0.5))
    await asyncio.sleep(0)
    assert not proxy.flowing.is_set()
    writer.write(b"held")
    await stalled
    assert proxy.flowing.is_set()
    assert await reader.readexactly(4) == b"held"
    writer.close()
