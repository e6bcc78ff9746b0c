"""Ingest's receive pool (ingest/pool.py): bytes received and not yet durable, across every
connection; while it is full no connection reads its next frame (TCP holds the rest)."""

from __future__ import annotations

import asyncio

from tapedeck.ingest.pool import ReceivePool


async def test_readers_wait_while_the_pool_is_full_and_resume_when_bytes_are_acked() -> None:
    pool = ReceivePool(max_bytes=1_000_000)
    await asyncio.wait_for(pool.room(), 5)
    pool.take(700_000)
    await asyncio.wait_for(pool.room(), 5)  # not full yet: one more frame may come in
    pool.take(400_000)  # over: a frame is never cut
    waiting = [asyncio.ensure_future(pool.room()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiting)
    pool.give_back(200_000)  # 900 000 held: room again, for every waiting reader
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert pool.held == 900_000


async def test_zero_means_unbounded() -> None:
    pool = ReceivePool(max_bytes=0)
    pool.take(10**9)
    await asyncio.wait_for(pool.room(), 5)
