"""Two real storage servers (gRPC on loopback, each its own volume) behind the router."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness import free_port
from storage_fixtures import storage_serving
from tapedeck import tokens
from tapedeck.placement import place
from tapedeck.sessions import State
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.replicas import ReplicatedStorage, connect
from tapedeck.storage.session_client import SessionClient


@contextlib.asynccontextmanager
async def two_replicas(tmp_path: Path) -> AsyncIterator[ReplicatedStorage]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    async with contextlib.AsyncExitStack() as stack:
        for index, addr in enumerate(addrs):
            settings = Settings(
                data_dir=tmp_path / f"volume-{index}", storage_addr=addr, storage_replica=index
            )
            await stack.enter_async_context(storage_serving(settings))
        router = connect(Settings(storage_addrs=",".join(addrs)))  # type: ignore[arg-type]
        assert isinstance(router, ReplicatedStorage)
        stack.push_async_callback(router.close)
        yield router


def test_one_replica_is_a_plain_client() -> None:
    assert not isinstance(connect(Settings(storage_addr="127.0.0.1:1")), ReplicatedStorage)


async def test_sessions_land_on_both_and_are_found_everywhere(tmp_path: Path) -> None:
    async with two_replicas(tmp_path) as router:
        created = [await router.create_session() for _ in range(12)]
        by_replica = {s.id: s.replica for s in created}
        assert set(by_replica.values()) == {0, 1}
        for session in created:
            assert session.replica == place(session.id, 2)
            # the owner (and only the owner) holds it: the manifest records the placement
            own = await router.at(session.replica).get_session(session.id)
            assert own.replica == session.replica
            with pytest.raises(errors.NotFound):
                await router.at(1 - session.replica).get_session(session.id)
        # a fresh router (another api pod) finds each owner without a record
        fresh = ReplicatedStorage([r.addr for r in router.replicas])
        try:
            for session in created:
                assert (await fresh.get_session(session.id)).replica == session.replica
            with pytest.raises(errors.NotFound):
                await fresh.get_session("nosuchsession-1")
            # the domain methods go to the owner
            sessions = SessionClient(fresh)
            done = await sessions.finish_tracks(created[0].id)
            assert done.state == 2  # recorded
            assert await sessions.delete_if_exists(created[1].id)
            assert await sessions.get_or_none(created[1].id) is None
        finally:
            await fresh.close()
        # listing merges both replicas' keysets, newest first, page by page
        seen = [s.id async for s in SessionClient(router).all(page_size=5)]
        assert sorted(seen) == sorted(s.id for s in created[:1] + created[2:])
        assert len(seen) == len(set(seen))
        listed = [s async for s in SessionClient(router).all(page_size=5)]
        keys = [(s.created_at_ms, s.id) for s in listed]
        assert keys == sorted(keys, reverse=True)
        recorded = [s.id async for s in SessionClient(router).all((State.RECORDED,))]
        assert recorded == [created[0].id]


async def test_the_token_names_the_owner(tmp_path: Path) -> None:
    async with two_replicas(tmp_path) as router:
        session = next(
            s for s in [await router.create_session() for _ in range(8)] if s.replica == 1
        )
        token = tokens.upload_token("k", session.id, 60, session.replica)
        assert tokens.upload_replica("k", session.id, token) == 1
        fresh = ReplicatedStorage([r.addr for r in router.replicas])
        try:
            fresh.pin(session.id, 1)
            assert (await fresh.get_session(session.id)).id == session.id
        finally:
            await fresh.close()
