"""Who may change a session while someone else writes to it: live writers against idle
finalization and compile requests, older compiles against newer ones, and refusals that
reach a client with writes in flight."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from backend_stores import BACKENDS, StoreFactory

from storage_fixtures import storage_serving
from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.queue import request_compile
from tapedeck.lifecycle import CompileVerdict
from tapedeck.sessions import State
from tapedeck.settings import Settings
from tapedeck.storage.backend import close_backend
from tapedeck.storage.client import StorageClient, StorageError, TrackWriter
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.server import StorageService


async def test_a_session_being_written_is_not_finalized(storage: StorageClient) -> None:
    """The sweeper lists a session (nobody writing), a writer reconnects, then the sweeper's
    finalization lands: it must be refused, or the writer keeps getting acks for bytes that
    no compile will read."""
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    try:
        with pytest.raises(StorageError) as err:
            await storage.update_session(
                pb.UpdateSessionRequest(
                    session_id=session.id,
                    finish_tracks=True,
                    if_state_in=[pb.SESSION_STATE_RECORDING],
                )
            )
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "being written" in err.value.message
        await writer.send(0, b"a" * 100, finish=True)
        async for ack in writer.acks():
            if ack.finished:
                break
    finally:
        writer.cancel()
    after = await storage.get_session(session.id)
    assert after.state == pb.SESSION_STATE_RECORDED
    assert after.tracks[0].committed_size == 100


async def test_a_compile_request_that_raced_a_reconnect_waits_for_the_recording(
    storage: StorageClient,
) -> None:
    """`POST /api/compile-video` read the session while nobody wrote to it (so it would
    finalize and queue it); a writer reconnected before its compare-and-set landed."""
    session = await storage.create_session()
    first = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    await first.send(0, b"a" * 100)
    async for _ in first.acks():
        break
    first.cancel()
    idle = await storage.get_session(session.id)
    for _ in range(50):
        if not idle.writing:
            break
        idle = await storage.get_session(session.id)
    assert not idle.writing
    writer = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    try:
        request = await request_compile(storage, idle)
        assert request.verdict == CompileVerdict.STILL_RECORDING
        assert not request.queued and request.state == State.RECORDING
    finally:
        writer.cancel()


async def begin_compile(storage: StorageClient, session_id: str) -> int:
    begun = await storage.update_session(
        pb.UpdateSessionRequest(session_id=session_id, begin_compile=True)
    )
    return begun.compile_generation


async def test_a_late_compile_never_replaces_a_published_output(
    storage: StorageClient, tmp_path: Path
) -> None:
    """Two compiles of one session (a follower that started after the session was queued,
    beside the worker's compile): the newer one publishes; the older one, finishing later,
    must be refused, not replace the MP4 or its metadata."""
    session = await storage.create_session()
    older = await begin_compile(storage, session.id)
    newer = await begin_compile(storage, session.id)
    assert newer > older
    mp4_new, mp4_old = tmp_path / "new.mp4", tmp_path / "old.mp4"
    mp4_new.write_bytes(os.urandom(300_000))
    mp4_old.write_bytes(os.urandom(500_000))
    await storage.upload_output(session.id, mp4_new, newer)
    await storage.update_session(
        pb.UpdateSessionRequest(
            session_id=session.id,
            state=pb.SESSION_STATE_READY,
            if_state_in=[pb.SESSION_STATE_COMPILING],
            if_compile_generation=newer,
        )
    )
    published = await storage.get_session(session.id)
    with pytest.raises(StorageError) as err:
        await storage.upload_output(session.id, mp4_old, older)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(StorageError):
        await storage.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id, progress=0.5, if_compile_generation=older
            )
        )
    after = await storage.get_session(session.id)
    assert after.state == pb.SESSION_STATE_READY
    assert after.output == published.output and after.output.size == 300_000
    stored = b"".join([c async for c in storage.read(session.id, "output")])
    assert stored == mp4_new.read_bytes()


async def test_an_older_compile_is_refused_while_a_newer_one_runs(
    storage: StorageClient, tmp_path: Path
) -> None:
    session = await storage.create_session()
    older = await begin_compile(storage, session.id)
    await begin_compile(storage, session.id)
    mp4 = tmp_path / "old.mp4"
    mp4.write_bytes(os.urandom(100_000))
    with pytest.raises(StorageError) as err:
        await storage.upload_output(session.id, mp4, older)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "superseded" in err.value.message or "compile" in err.value.message
    assert not (await storage.get_session(session.id)).HasField("output")


async def test_a_refusal_reaches_a_client_with_writes_in_flight(storage: StorageClient) -> None:
    """Storage refuses in-band and keeps reading, so a client that pipelines writes past the
    session's byte limit still learns why (not a bare INTERNAL from grpc), on both sides."""
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    frame = b"f" * 64 * 1024
    errors: list[StorageError] = []
    try:
        for i in range(40):  # 2.5 MB against the test's 1 MB limit
            try:
                await writer.send(i * len(frame), frame)
            except StorageError as err:
                errors.append(err)
                break
        with pytest.raises(StorageError) as acked:
            async for _ in writer.acks():
                pass
        errors.append(acked.value)
    finally:
        writer.cancel()
    for err in errors:
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED, err.message
        assert err.reason == "session-too-large"


@pytest.mark.parametrize("started_at", [float("nan"), float("inf"), -1.0, 1e15])
async def test_a_track_start_that_is_no_clock_is_refused(
    storage: StorageClient, storage_settings: Settings, started_at: float
) -> None:
    """A NaN start would be saved as `null`, and a manifest that does not load makes the whole
    session disappear at the next start."""
    session = await storage.create_session()
    with pytest.raises(StorageError) as err:
        await storage.open_writer(session.id, "audio", "audio/webm", started_at)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    reloaded = StorageService(LocalBackend(storage_settings.data_dir), storage_settings)
    assert (
        session.id in reloaded.registry.records and not reloaded.registry.records[session.id].tracks
    )


async def finished(writer: TrackWriter) -> int:
    async for ack in writer.acks():
        if ack.finished:
            return ack.committed_size
    raise AssertionError("no final ack")


async def test_an_output_written_ahead_is_published_by_the_compile_that_begins_next(
    storage: StorageClient,
) -> None:
    """A follower uploads the MP4 while the session records (under the generation the next
    compile will get), and fills its head in once that compile began."""
    session = await storage.create_session()
    track = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    await track.send(0, b"v" * 100)
    async for _ in track.acks():
        break
    head, body = os.urandom(1000), os.urandom(300_000)
    writer = await storage.open_writer(
        session.id, "output", compile_generation=session.compile_generation + 1
    )
    try:
        await writer.send(0, bytes(len(head)))
        await writer.send(len(head), body)
        await track.send(100, b"", finish=True)
        await finished(track)
        queued = await storage.update_session(
            pb.UpdateSessionRequest(session_id=session.id, state=pb.SESSION_STATE_QUEUED)
        )
        assert await begin_compile(storage, session.id) == queued.compile_generation + 1
        await writer.send(0, head, finish=True)  # the head, rewritten once
        assert await finished(writer) == len(head) + len(body)
    finally:
        writer.cancel()
        track.cancel()
    after = await storage.get_session(session.id)
    assert after.output.size == len(head) + len(body) and after.output.etag
    stored = b"".join([c async for c in storage.read(session.id, "output")])
    assert stored == head + body


async def test_an_output_written_ahead_is_published_only_once_its_compile_began(
    storage: StorageClient,
) -> None:
    session = await storage.create_session()
    with pytest.raises(StorageError) as err:
        await storage.open_writer(
            session.id, "output", compile_generation=session.compile_generation + 2
        )
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    writer = await storage.open_writer(
        session.id, "output", compile_generation=session.compile_generation + 1
    )
    try:
        await writer.send(0, b"m" * 1000)
        await writer.send(1000, b"", finish=True)
        with pytest.raises(StorageError) as err:
            await finished(writer)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        writer.cancel()
    assert not (await storage.get_session(session.id)).HasField("output")
    rewrite = await storage.open_writer(
        session.id, "output", compile_generation=session.compile_generation + 1
    )
    try:
        await rewrite.send(0, b"m" * 1000)
        await rewrite.send(10, b"h" * 10)
        await rewrite.send(0, b"again")  # a second rewrite is refused
        with pytest.raises(StorageError) as err:
            async for _ in rewrite.acks():
                pass
        assert err.value.code == grpc.StatusCode.OUT_OF_RANGE
    finally:
        rewrite.cancel()


@pytest.fixture(params=BACKENDS)
async def any_storage(
    request: pytest.FixtureRequest, storage_settings: Settings, tmp_path: Path
) -> AsyncIterator[StorageClient]:
    """The storage server over each backend of the conformance suite."""
    factory: StoreFactory = request.param
    with factory(tmp_path / "store", None) as store:
        backend = store.backend()
        try:
            async with storage_serving(storage_settings, backend) as client:
                yield client
        finally:
            close_backend(backend)


async def test_named_outputs_of_the_ready_compile_land_after_ready(
    any_storage: StorageClient, tmp_path: Path
) -> None:
    """A session is `ready` once its MP4 is published; the same compile then adds the poster,
    storyboard and HLS, each listed as it lands. Nothing else may write after `ready`: not the
    MP4, not an older compile."""
    storage = any_storage
    session = await storage.create_session()
    older = await begin_compile(storage, session.id)
    generation = await begin_compile(storage, session.id)
    mp4, poster, playlist = tmp_path / "out.mp4", tmp_path / "poster.jpg", tmp_path / "hls.m3u8"
    mp4.write_bytes(os.urandom(200_000))
    poster.write_bytes(os.urandom(20_000))
    playlist.write_bytes(b"#EXTM3U\n#EXT-X-ENDLIST\n")
    await storage.upload_output(session.id, mp4, generation)
    await storage.update_session(
        pb.UpdateSessionRequest(
            session_id=session.id,
            state=pb.SESSION_STATE_READY,
            if_state_in=[pb.SESSION_STATE_COMPILING],
            if_compile_generation=generation,
        )
    )
    ready = await storage.get_session(session.id)
    assert ready.state == pb.SESSION_STATE_READY and not ready.named_outputs

    await storage.upload_output(session.id, poster, generation, "poster.jpg")
    listed = await storage.get_session(session.id)
    assert [(o.name, o.size) for o in listed.named_outputs] == [("poster.jpg", 20_000)]
    assert listed.state == pb.SESSION_STATE_READY and listed.output == ready.output
    stored = b"".join([c async for c in storage.read(session.id, "poster.jpg")])
    assert stored == poster.read_bytes()

    for name, path, gen in (("hls.m3u8", playlist, older), ("output", poster, generation)):
        with pytest.raises(StorageError) as err:
            await storage.upload_output(session.id, path, gen, name)
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, err.value.message
    after = await storage.get_session(session.id)
    assert [o.name for o in after.named_outputs] == ["poster.jpg"]
    assert after.output == ready.output
    assert b"".join([c async for c in storage.read(session.id, "output")]) == mp4.read_bytes()
