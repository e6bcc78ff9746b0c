"""The storage gRPC contract, over a real socket."""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from pathlib import Path

import grpc
import psutil
import pytest

from tapedeck._proto import storage_pb2 as pb
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError


async def write_all(
    storage: StorageClient, sid: str, track: str, data: bytes, finish: bool = True
) -> int:
    writer = await storage.open_writer(sid, track, "video/webm", 1.5)
    offset = writer.committed
    await writer.send(offset, data[offset:], finish=finish)
    async for ack in writer.acks():
        if ack.committed_size == len(data) and (ack.finished or not finish):
            writer.cancel()
            return ack.committed_size
    raise AssertionError("no final ack")


async def test_create_write_read_and_layout(
    storage: StorageClient, storage_settings: Settings
) -> None:
    session = await storage.create_session()
    data = os.urandom(300_000)
    assert await write_all(storage, session.id, "video", data) == len(data)
    stored = b"".join([c async for c in storage.read(session.id, "video")])
    assert stored == data
    middle = b"".join([c async for c in storage.read(session.id, "video", 1000, 5000)])
    assert middle == data[1000:6000]
    directory = storage_settings.data_dir / session.id
    assert (directory / "video.webm").read_bytes() == data
    assert (directory / "session.json").exists()
    detail = await storage.get_session(session.id)
    assert detail.state == pb.SESSION_STATE_RECORDED
    assert detail.tracks[0].committed_size == len(data) and detail.tracks[0].finished
    assert detail.tracks[0].mime_type == "video/webm" and detail.tracks[0].started_at == 1.5


async def test_wrong_offset_is_out_of_range(storage: StorageClient) -> None:
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "audio", "audio/webm", 0)
    await writer.send(0, b"abc")
    await writer.send(10, b"def")
    with pytest.raises(StorageError) as err:
        async for _ in writer.acks():
            pass
    assert err.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert "write_offset 10" in err.value.message
    status = await storage.query_write_status(session.id, "audio")
    assert status.committed_size == 3 and not status.complete


async def test_unknown_and_invalid_ids_are_distinct(storage: StorageClient) -> None:
    with pytest.raises(StorageError) as unknown:
        await storage.get_session("abcdefgh-0000")
    assert unknown.value.code == grpc.StatusCode.NOT_FOUND
    for bad in ("..", "../../etc", "a/b/c/d/e/f", "x" * 64, "ABCDEFGHI", "a%2Fbcdefgh"):
        with pytest.raises(StorageError) as invalid:
            await storage.get_session(bad)
        assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(StorageError) as invalid_write:
            await storage.open_writer(bad, "video")
        assert invalid_write.value.code == grpc.StatusCode.INVALID_ARGUMENT
    session = await storage.create_session()
    with pytest.raises(StorageError) as bad_object:
        await storage.open_writer(session.id, "../../passwd")
    assert bad_object.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_finished_track_refuses_writes(storage: StorageClient) -> None:
    session = await storage.create_session()
    await write_all(storage, session.id, "video", b"x" * 100)
    with pytest.raises(StorageError) as err:
        await storage.open_writer(session.id, "video")
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_newer_writer_takes_over(storage: StorageClient) -> None:
    session = await storage.create_session()
    old = await storage.open_writer(session.id, "video", "video/webm", 0)
    await old.send(0, b"a" * 1000)
    async for ack in old.acks():
        assert ack.committed_size == 1000
        break
    new = await storage.open_writer(session.id, "video", "video/webm", 0)
    assert new.committed == 1000
    with pytest.raises(StorageError) as err:
        await old.send(1000, b"b" * 10)
        async for _ in old.acks():
            pass
    assert err.value.code == grpc.StatusCode.ABORTED
    await new.send(1000, b"c" * 10, finish=True)
    async for ack in new.acks():
        if ack.finished:
            break
    stored = b"".join([c async for c in storage.read(session.id, "video")])
    assert stored == b"a" * 1000 + b"c" * 10


async def test_session_byte_limit(storage: StorageClient) -> None:
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 0)
    await writer.send(0, b"v" * 900_000)
    async for _ in writer.acks():
        break
    other = await storage.open_writer(session.id, "audio", "audio/webm", 0)
    await other.send(0, b"a" * 200_000)
    with pytest.raises(StorageError) as err:
        async for _ in other.acks():
            pass
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.value.reason == "session-too-large"
    assert (await storage.query_write_status(session.id, "video")).committed_size == 900_000


async def test_list_paginates_and_filters(storage: StorageClient) -> None:
    ids = set()
    for _ in range(7):
        ids.add((await storage.create_session()).id)
    seen: list[str] = []
    token = ""
    while True:
        page = await storage.list_sessions(3, token)
        assert len(page.sessions) <= 3
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    ready = await storage.list_sessions(10, "", [pb.SESSION_STATE_READY])
    assert list(ready.sessions) == []
    with pytest.raises(StorageError) as err:
        await storage.list_sessions(3, "not-a-token!")
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_update_compare_and_set(storage: StorageClient) -> None:
    session = await storage.create_session()
    with pytest.raises(StorageError) as err:
        await storage.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id,
                state=pb.SESSION_STATE_QUEUED,
                if_state_in=[pb.SESSION_STATE_RECORDED],
            )
        )
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    updated = await storage.update_session(
        pb.UpdateSessionRequest(
            session_id=session.id, finish_tracks=True, if_state_in=[pb.SESSION_STATE_RECORDING]
        )
    )
    assert updated.state == pb.SESSION_STATE_RECORDED


async def begin_compile(storage: StorageClient, session_id: str) -> int:
    """Move a session to `compiling` as a compile does; returns the compile's generation."""
    begun = await storage.update_session(
        pb.UpdateSessionRequest(session_id=session_id, begin_compile=True)
    )
    return begun.compile_generation


async def test_output_is_published_atomically(
    storage: StorageClient, tmp_path: Path, storage_settings: Settings
) -> None:
    session = await storage.create_session()
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    generation = await begin_compile(storage, session.id)
    assert await storage.upload_output(session.id, mp4, generation) == mp4.stat().st_size
    detail = await storage.get_session(session.id)
    assert detail.output.size == mp4.stat().st_size and len(detail.output.etag) == 32
    final = storage_settings.data_dir / session.id / f"{session.id}.mp4"
    assert final.read_bytes() == mp4.read_bytes()
    assert not list(final.parent.glob(".*partial"))
    tail = b"".join(
        [c async for c in storage.read(session.id, "output", final.stat().st_size - 10)]
    )
    assert tail == mp4.read_bytes()[-10:]


async def test_delete_removes_everything(
    storage: StorageClient, storage_settings: Settings
) -> None:
    session = await storage.create_session()
    await write_all(storage, session.id, "audio", b"z" * 10)
    await storage.delete_session(session.id)
    assert not (storage_settings.data_dir / session.id).exists()
    with pytest.raises(StorageError) as err:
        await storage.get_session(session.id)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


async def test_delete_stops_active_writer(storage: StorageClient) -> None:
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 0)
    await writer.send(0, b"1" * 10)
    async for _ in writer.acks():
        break
    await storage.delete_session(session.id)
    with pytest.raises(StorageError):
        await writer.send(10, b"2" * 10)
        async for _ in writer.acks():
            pass


async def test_manifests_survive_restart(storage_settings: Settings) -> None:
    """A second server over the same directory sees the sessions and sizes the first left."""
    import grpc as grpc_mod

    from tapedeck._proto import storage_pb2_grpc as pb_grpc
    from tapedeck.storage.local import LocalBackend
    from tapedeck.storage.server import StorageService

    async def run_server() -> grpc_mod.aio.Server:
        server = grpc_mod.aio.server()
        pb_grpc.add_StorageServicer_to_server(
            StorageService(LocalBackend(storage_settings.data_dir), storage_settings), server
        )
        server.add_insecure_port(storage_settings.storage_addr)
        await server.start()
        return server

    server = await run_server()
    async with StorageClient(storage_settings.storage_addr) as client:
        session = await client.create_session()
        await write_all(client, session.id, "video", b"q" * 5000, finish=False)
    await server.stop(None)
    await asyncio.sleep(0.1)
    server = await run_server()
    async with StorageClient(storage_settings.storage_addr) as client:
        detail = await client.get_session(session.id)
        assert detail.tracks[0].committed_size == 5000 and not detail.tracks[0].finished
        assert detail.state == pb.SESSION_STATE_RECORDING
    await server.stop(None)


async def test_tracks_opened_at_the_same_time_are_all_kept(storage: StorageClient) -> None:
    """Each track's open rewrites the manifest; none may overwrite another's."""
    for _ in range(5):
        session = await storage.create_session()
        writers = await asyncio.gather(
            *(storage.open_writer(session.id, t, "video/webm", 1.0) for t in ("video", "audio"))
        )
        for writer in writers:
            writer.cancel()
        tracks = {t.name for t in (await storage.get_session(session.id)).tracks}
        assert tracks == {"video", "audio"}


async def test_concurrent_updates_are_not_lost(storage: StorageClient) -> None:
    session = await storage.create_session()
    await asyncio.gather(
        storage.update_session(pb.UpdateSessionRequest(session_id=session.id, progress=0.5)),
        storage.update_session(pb.UpdateSessionRequest(session_id=session.id, error="boom")),
    )
    after = await storage.get_session(session.id)
    assert after.progress == 0.5 and after.error == "boom"


async def test_reads_arrive_whole_and_in_order_with_read_ahead(storage: StorageClient) -> None:
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    data = os.urandom(900_000)
    for offset in range(0, len(data), 100_000):
        await writer.send(offset, data[offset : offset + 100_000])
    await writer.send(len(data), b"", finish=True)
    async for ack in writer.acks():
        if ack.finished:
            break
    chunks = [c async for c in storage.read(session.id, "video")]
    assert b"".join(chunks) == data
    assert (
        b"".join([c async for c in storage.read(session.id, "video", 123, 456_789)])
        == (data[123 : 123 + 456_789])
    )


def open_files_under(directory: Path) -> list[str]:
    return [f.path for f in psutil.Process().open_files() if f.path.startswith(f"{directory}/")]


async def test_streams_a_client_abandons_release_their_files(
    storage: StorageClient, storage_settings: Settings, tmp_path: Path
) -> None:
    """A deleted file's space returns only when its last descriptor closes: a full volume
    stays full while a Write or Read that its client cancelled still holds one. The garbage
    collector is off so that it cannot close them for us."""
    session = await storage.create_session()
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(os.urandom(16 * 1024 * 1024))
    gc.disable()
    try:
        for track in ("video", "audio"):  # cancelled right after `finished`, as ingest does
            await write_all(storage, session.id, track, os.urandom(100_000))
        await storage.upload_output(session.id, mp4, await begin_compile(storage, session.id))
        for _ in range(5):  # cancelled midway, as an abandoned download is
            reader = storage.read(session.id, "output")
            await anext(reader)
            await asyncio.sleep(0.1)  # storage is held by flow control now, mid-send
            await reader.aclose()
        directory = storage_settings.data_dir / session.id
        for _ in range(100):
            if not open_files_under(directory):
                break
            await asyncio.sleep(0.02)
        assert open_files_under(directory) == []
    finally:
        gc.enable()


async def test_ttls_beyond_the_bound_are_invalid(storage: StorageClient) -> None:
    """An absurd TTL (a RecordingSession's `spec.ttl: 100000000d`) is refused, not stored:
    its expiry would not fit a date, and every listing holding it would fail."""
    with pytest.raises(StorageError) as created:
        await storage.create_session(ttl_seconds=100_000_000 * 86400)
    assert created.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "3650d" in created.value.message
    with pytest.raises(StorageError) as negative:
        await storage.create_session(ttl_seconds=-1)
    assert negative.value.code == grpc.StatusCode.INVALID_ARGUMENT
    session = await storage.create_session(ttl_seconds=3650 * 86400)
    with pytest.raises(StorageError) as updated:
        await storage.update_session(
            pb.UpdateSessionRequest(session_id=session.id, expires_at_ms=2**62)
        )
    assert updated.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "3650d" in updated.value.message
    kept = await storage.get_session(session.id)
    assert kept.expires_at_ms == session.expires_at_ms
    # Expiring it now stays possible.
    now = await storage.update_session(
        pb.UpdateSessionRequest(session_id=session.id, expires_at_ms=session.created_at_ms)
    )
    assert now.expires_at_ms == session.created_at_ms


async def test_write_streams_waiting_for_their_next_frame_hold_none_of_the_last(
    storage: StorageClient,
) -> None:
    """Between two frames (a second, for a browser) a stream holds nothing of the last one:
    a loop variable or the parsed request kept alive across the wait costs a frame per
    stream, 94 MB at 300 streams (docs/performance.md). Counted with tracemalloc, in the
    process that runs storage (the client's copies are in gRPC's C core, untraced)."""
    streams, size = 8, 300_000
    frame = os.urandom(size)  # one block, shared by every stream
    tracemalloc.start()
    try:
        writers = []
        for _ in range(streams):
            session = await storage.create_session()
            writer = await storage.open_writer(session.id, "video", "video/webm")
            await writer.send(0, frame)
            writers.append(writer)
        for writer in writers:
            async for ack in writer.acks():
                if ack.committed_size == size:
                    break
        await asyncio.sleep(0.2)
        gc.collect()
        big = [
            t
            for t in tracemalloc.take_snapshot().traces
            if t.size >= size  # frame-sized blocks
        ]
    finally:
        tracemalloc.stop()
        for writer in writers:
            writer.cancel()
    assert len(big) <= 2, f"{len(big)} frame-sized blocks held by {streams} idle streams"
