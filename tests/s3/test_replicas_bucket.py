"""The router over two real storage servers (gRPC on loopback, own volumes) whose S3 tier shares
one SeaweedFS bucket: listing is a keyset walk over the bucket, owners are found from the
manifest copies, deletes leave the listing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness import free_port
from s3_fixtures import S3Place
from storage_fixtures import storage_serving
from tapedeck._proto import storage_pb2 as pb
from tapedeck.placement import place
from tapedeck.sessions import State
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.objectstore import LISTING, ObjectStore
from tapedeck.storage.replicas import BucketView, ReplicatedStorage
from tapedeck.storage.s3tier import S3TieredBackend
from tapedeck.storage.session_client import SessionClient


@contextlib.asynccontextmanager
async def replicas_over(s3_place: S3Place, tmp_path: Path) -> AsyncIterator[ReplicatedStorage]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        for index, addr in enumerate(addrs):
            settings = Settings(
                data_dir=tmp_path / f"volume-{index}",
                storage_addr=addr,
                storage_replica=index,
                s3_bucket=s3_place.bucket,
            )
            backend = S3TieredBackend(settings.data_dir, s3_place.settings())
            stack.callback(backend.close)
            await stack.enter_async_context(storage_serving(settings, backend))
        router = ReplicatedStorage(addrs, BucketView(s3_place.settings()))
        stack.push_async_callback(router.close)
        yield router


async def listed_keys(s3_place: S3Place) -> list[str]:
    async with ObjectStore(s3_place.settings()) as store:
        return [k.key for k in await store.list_keys(LISTING)]


async def wait_listed(s3_place: S3Place, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(await listed_keys(s3_place)) != count:
        assert time.monotonic() < deadline, await listed_keys(s3_place)
        await asyncio.sleep(0.1)


def spread_ids(count: int, replicas: int = 2) -> list[str]:
    """Ids the placement rule puts on replica 0, 1, 0, 1, ...: random ids would put all 7 on
    one replica in 1 run of 64. Fixed, so every run places them the same."""
    ids: list[str] = []
    for n in itertools.count():
        candidate = f"listing-walk-{n:04d}"
        if place(candidate, replicas) == len(ids) % replicas:
            ids.append(candidate)
            if len(ids) == count:
                return ids
    raise AssertionError("unreachable")


def listing_order(sessions: list[pb.Session]) -> list[str]:
    """The bucket's order (docs/storage.md): newest first; sessions created within the same
    millisecond (a fast machine creates several) in id order."""
    return [s.id for s in sorted(sessions, key=lambda s: (-s.created_at_ms, s.id))]


async def test_listing_walks_the_bucket(s3_place: S3Place, tmp_path: Path) -> None:
    async with replicas_over(s3_place, tmp_path) as router:
        created = [await router.create_session(sid) for sid in spread_ids(7)]
        assert [s.replica for s in created] == [0, 1, 0, 1, 0, 1, 0]
        await wait_listed(s3_place, 7)
        sessions = SessionClient(router)
        await sessions.finish_tracks(created[2].id)
        # newest first, page by page (3 a page), each exactly once
        listed = [s async for s in sessions.all(page_size=3)]
        assert [s.id for s in listed] == listing_order(created)
        # a state filter, over the bucket's copies refreshed from the owners
        deadline = time.monotonic() + 60
        while [s.id async for s in sessions.all((State.RECORDED,))] != [created[2].id]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        # a fresh router (another api pod) finds owners from the manifest copies
        fresh = ReplicatedStorage(
            [r.addr for r in router.replicas], BucketView(s3_place.settings())
        )
        try:
            for session in created:
                owner = await fresh.owner(session.id)
                assert owner.addr == router.replicas[session.replica].addr
        finally:
            await fresh.close()
        # a delete leaves the listing too
        assert await sessions.delete_if_exists(created[0].id)
        await wait_listed(s3_place, 6)
        assert created[0].id not in {s.id async for s in sessions.all()}


async def test_a_malformed_cursor_is_a_clear_refusal(s3_place: S3Place, tmp_path: Path) -> None:
    async with replicas_over(s3_place, tmp_path) as router:
        for token in ("!!", "MTIzOkFCQw==", "eDpub3RhbmlkLTEyMw=="):  # junk, 123:ABC, x:notanid-123
            with pytest.raises(errors.InvalidArgument):
                await router.list_sessions(10, token)
