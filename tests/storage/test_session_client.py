"""The session client's domain methods against a real storage server over a socket."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tapedeck._proto import storage_pb2 as pb
from tapedeck.sessions import State
from tapedeck.storage import errors
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.records import PB_TO_STATE
from tapedeck.storage.session_client import SessionClient


@pytest.fixture
def sessions(storage: StorageClient) -> SessionClient:
    return SessionClient(storage)


async def recorded(storage: StorageClient) -> str:
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "audio", "audio/webm", 0)
    await writer.send(0, b"a" * 100, finish=True)
    async for ack in writer.acks():
        if ack.finished:
            break
    writer.cancel()
    return session.id


async def test_errors_arrive_as_the_domain_classes_and_keep_their_status(
    storage: StorageClient,
) -> None:
    with pytest.raises(errors.NotFound) as missing:
        await storage.get_session("abcdefgh-0000")
    assert isinstance(missing.value, StorageError)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(errors.InvalidArgument):
        await storage.get_session("../etc")
    sid = (await storage.create_session()).id
    with pytest.raises(errors.AlreadyExists):
        await storage.create_session(sid)


async def test_get_create_and_delete_without_status_codes(sessions: SessionClient) -> None:
    assert await sessions.get_or_none("abcdefgh-0000") is None
    created = await sessions.create_or_get("abcdefgh-0001", ttl_seconds=60)
    again = await sessions.create_or_get("abcdefgh-0001")
    assert again.id == created.id and again.created_at_ms == created.created_at_ms
    assert (await sessions.get("abcdefgh-0001")).id == created.id
    assert await sessions.delete_if_exists("abcdefgh-0001") is True
    assert await sessions.delete_if_exists("abcdefgh-0001") is False
    with pytest.raises(errors.NotFound):
        await sessions.get("abcdefgh-0001")


async def test_a_transition_is_a_compare_and_set(
    storage: StorageClient, sessions: SessionClient
) -> None:
    sid = await recorded(storage)
    with pytest.raises(errors.Conflict, match="is recorded"):
        await sessions.transition(sid, State.READY, (State.COMPILING,))
    queued = await sessions.transition(sid, State.QUEUED, (State.RECORDED,), compile_attempts=0)
    assert PB_TO_STATE[queued.state] == State.QUEUED
    with pytest.raises(ValueError):
        await sessions.transition(sid, State.FAILED, ())  # no states would be no condition


async def test_mark_failed_fails_only_a_session_still_waiting_for_its_compile(
    storage: StorageClient, sessions: SessionClient
) -> None:
    sid = await recorded(storage)
    assert await sessions.mark_failed(sid, "gave up") is None, "a recorded session was failed"
    assert PB_TO_STATE[(await sessions.get(sid)).state] == State.RECORDED
    await sessions.transition(sid, State.QUEUED, (State.RECORDED,))
    first = (await sessions.begin_compile(sid)).compile_generation
    second = (await sessions.begin_compile(sid)).compile_generation
    # An older compile's failure is fenced off: the newer compile goes on.
    assert await sessions.mark_failed(sid, "old", (State.COMPILING,), first) is None
    assert PB_TO_STATE[(await sessions.get(sid)).state] == State.COMPILING
    failed = await sessions.mark_failed(sid, "ffmpeg said no", (State.COMPILING,), second)
    assert failed is not None
    assert PB_TO_STATE[failed.state] == State.FAILED and failed.error == "ffmpeg said no"
    with pytest.raises(errors.Conflict):
        await sessions.begin_compile(sid)


async def test_finish_tracks_is_refused_while_a_writer_is_connected(
    storage: StorageClient, sessions: SessionClient
) -> None:
    sid = (await storage.create_session()).id
    writer = await storage.open_writer(sid, "video", "video/webm", 0)
    try:
        with pytest.raises(errors.Conflict, match="being written"):
            await sessions.finish_tracks(sid)
    finally:
        writer.cancel()
    for _ in range(100):  # storage sees the cancelled stream end
        if not (await sessions.get(sid)).writing:
            break
        await asyncio.sleep(0.05)
    finished = await sessions.finish_tracks(sid)
    assert PB_TO_STATE[finished.state] == State.RECORDED


async def test_all_walks_every_page(storage: StorageClient, sessions: SessionClient) -> None:
    made = {(await storage.create_session()).id for _ in range(7)}
    await sessions.transition(next(iter(made)), State.FAILED, (State.RECORDING,))
    seen = [s.id async for s in sessions.all(page_size=3)]
    assert sorted(seen) == sorted(made)
    failed = [s async for s in sessions.all((State.FAILED,), page_size=3)]
    assert [s.state for s in failed] == [pb.SESSION_STATE_FAILED]
