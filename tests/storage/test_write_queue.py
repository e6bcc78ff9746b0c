"""A Write stream's queue is bounded in bytes, not messages (storage/registry.py `WriteQueue`):
eight 4 MiB upload chunks or eight 312 KiB frames used to be queued alike, per stream."""

from __future__ import annotations

import asyncio

import pytest

from tapedeck.storage import errors
from tapedeck.storage.registry import Append, Stop, WriteQueue

FRAME = 312_500


async def test_puts_wait_once_the_queued_bytes_reach_the_cap() -> None:
    queue = WriteQueue(max_bytes=1_000_000)
    for k in range(3):  # 937 500 B
        await asyncio.wait_for(queue.put(Append(k * FRAME, b"x" * FRAME)), 5)
    fourth = asyncio.ensure_future(queue.put(Append(3 * FRAME, b"x" * FRAME)))
    await asyncio.sleep(0.05)
    assert not fourth.done()
    assert queue.queued_bytes == 3 * FRAME
    first = await queue.get()
    assert isinstance(first, Append) and first.offset == 0
    await asyncio.wait_for(fourth, 5)
    assert queue.queued_bytes == 3 * FRAME


async def test_an_item_bigger_than_the_cap_enters_an_empty_queue() -> None:
    queue = WriteQueue(max_bytes=1_000_000)
    await asyncio.wait_for(queue.put(Append(0, b"x" * 4_000_000)), 5)
    second = asyncio.ensure_future(queue.put(Append(4_000_000, b"y")))
    await asyncio.sleep(0.05)
    assert not second.done()
    assert (await queue.get()) is not None
    await asyncio.wait_for(second, 5)


async def test_get_waits_for_an_item_and_the_end_markers_cost_nothing() -> None:
    queue = WriteQueue(max_bytes=10)
    getting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0.01)
    assert not getting.done()
    await queue.put(Append(0, b"0123456789"))
    assert isinstance(await asyncio.wait_for(getting, 5), Append)
    await queue.put(Append(10, b"0123456789"))
    queue.put_nowait(None)  # never waits: the client half-closed
    stop = Stop(errors.Superseded("newer"))
    queue.put_nowait(stop)
    assert queue.queued_bytes == 10
    assert isinstance(queue.get_nowait(), Append)
    assert queue.get_nowait() is None
    assert queue.get_nowait() is stop
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()
