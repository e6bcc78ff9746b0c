"""New sessions go where there is room: a replica below its free-space reserve refuses them
(StorageFull), the router places them on the next replica, and the api answers 503 +
Retry-After only when every replica is full."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from harness import free_port, make_stack
from storage_fixtures import storage_serving
from tapedeck.placement import has_room, ranking
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.replicas import ReplicatedStorage, connect

ALL_OF_IT = 10**18  # a reserve no volume has: the replica counts as full


def test_has_room() -> None:
    assert has_room(100.0, 0)  # no reserve: never full
    assert has_room(100.0, 100)
    assert not has_room(99.0, 100)
    assert has_room(math.nan, 100)  # unknown free space refuses nothing


@contextlib.asynccontextmanager
async def replicas(tmp_path: Path, reserves: list[int]) -> AsyncIterator[ReplicatedStorage]:
    addrs = [f"127.0.0.1:{free_port()}" for _ in reserves]
    async with contextlib.AsyncExitStack() as stack:
        for index, (addr, reserve) in enumerate(zip(addrs, reserves, strict=True)):
            settings = Settings(
                data_dir=tmp_path / f"volume-{index}",
                storage_addr=addr,
                storage_replica=index,
                storage_min_free_bytes=reserve,
            )
            await stack.enter_async_context(storage_serving(settings))
        router = connect(Settings(storage_addrs=",".join(addrs)))  # type: ignore[arg-type]
        assert isinstance(router, ReplicatedStorage)
        stack.push_async_callback(router.close)
        yield router


async def test_a_full_replica_passes_new_sessions_on(tmp_path: Path) -> None:
    async with replicas(tmp_path, [ALL_OF_IT, 0]) as router:
        created = [await router.create_session() for _ in range(8)]
        assert {s.replica for s in created} == {1}
        # some of them the rule placed on replica 0: those were passed on, and are found
        assert any(ranking(s.id, 2)[0] == 0 for s in created)
        fresh = ReplicatedStorage([r.addr for r in router.replicas])
        try:
            for session in created:
                assert (await fresh.get_session(session.id)).replica == 1
        finally:
            await fresh.close()
        with pytest.raises(errors.StorageFull):
            await router.at(0).create_session()


async def test_every_replica_full_refuses(tmp_path: Path) -> None:
    async with replicas(tmp_path, [ALL_OF_IT, ALL_OF_IT]) as router:
        with pytest.raises(errors.StorageFull) as err:
            await router.create_session()
        assert "TAPEDECK_STORAGE_MIN_FREE_BYTES" in err.value.message


def test_api_answers_503_with_retry_after_when_storage_is_full(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, storage_min_free_bytes=str(ALL_OF_IT))
    try:
        stack.start()
        reply = httpx.post(f"{stack.base_url}/api/sessions", timeout=30)
        assert reply.status_code == 503, reply.text
        assert reply.headers["Retry-After"] == "60"
        assert reply.json()["error"]["code"] == "storage-full"
    finally:
        stack.stop()
