"""Real storage on the power-cut file system: what it acknowledges or reports survives a cut.

Storage is stopped before each cut (closing a file does not sync it, so this loses nothing a
running storage would have kept), and a new one starts on what survived, as after a reboot.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import free_port
from powercut.mount import PowerCutDir
from storage_fixtures import storage_serving
from tapedeck._proto import storage_pb2 as pb
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient


@pytest.fixture
def settings(powercut_dir: PowerCutDir) -> Settings:
    # The mount's root is the data dir: it always exists, as a volume's mount point does.
    return Settings(
        data_dir=powercut_dir.path,
        storage_addr=f"127.0.0.1:{free_port()}",
        max_session_bytes=1_000_000,
    )


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_unsynced(path: Path, data: bytes) -> None:
    """What a storage that died after `pwrite` and before `fdatasync` leaves behind."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


async def write_acked(client: StorageClient, sid: str, track: str, data: bytes) -> int:
    writer = await client.open_writer(sid, track, "video/webm", 0)
    offset = writer.committed
    await writer.send(offset, data[offset:])
    async for ack in writer.acks():
        if ack.committed_size == len(data):
            writer.cancel()
            return ack.committed_size
    raise AssertionError("no ack for every byte")


async def acked_track(settings: Settings, data: bytes) -> tuple[str, Path]:
    """A session whose video track holds `data`, acknowledged, with the track's directory
    entry made durable by the test (so these tests do not depend on the entry's own fix)."""
    async with storage_serving(settings) as client:
        session = await client.create_session()
        assert await write_acked(client, session.id, "video", data) == len(data)
    sync_dir(settings.data_dir / session.id)
    return session.id, settings.data_dir / session.id / "video.webm"


async def test_acked_bytes_of_a_new_track_survive_a_power_cut(
    powercut_dir: PowerCutDir, settings: Settings
) -> None:
    """Issue 13 item 16: a new track file's directory entry must be durable before its bytes
    are acknowledged; the manifest's save fsyncs the directory before the file exists."""
    data = os.urandom(50_000)
    async with storage_serving(settings) as client:
        session = await client.create_session()
        assert await write_acked(client, session.id, "video", data) == len(data)
    powercut_dir.cut()
    async with storage_serving(settings) as client:
        status = await client.query_write_status(session.id, "video")
        assert status.committed_size == len(data)
        assert b"".join([c async for c in client.read(session.id, "video")]) == data


async def test_sizes_loaded_at_start_are_durable(
    powercut_dir: PowerCutDir, settings: Settings
) -> None:
    """Issue 13 item 7: after a storage crash the file may hold page-cache bytes that were never
    synced; the size reported at start is what the client drops its own copy up to."""
    acked = os.urandom(1000)
    sid, track = await acked_track(settings, acked)
    append_unsynced(track, b"u" * 5000)
    async with storage_serving(settings) as client:
        reported = (await client.query_write_status(sid, "video")).committed_size
    assert reported >= len(acked)
    powercut_dir.cut()
    assert track.stat().st_size >= reported
    assert track.read_bytes()[: len(acked)] == acked


async def test_a_writers_first_answer_is_durable(
    powercut_dir: PowerCutDir, settings: Settings
) -> None:
    """Issue 13 item 7, the open path: bytes that reached the file after storage loaded its
    sizes but were never synced (a crashed or cancelled commit's `pwrite`) must not be
    reported to the next writer as committed."""
    acked = os.urandom(1000)
    sid, track = await acked_track(settings, acked)
    async with storage_serving(settings) as client:
        append_unsynced(track, b"u" * 5000)
        writer = await client.open_writer(sid, "video", "video/webm", 0)
        reported = writer.committed
        writer.cancel()
    assert reported >= len(acked)
    powercut_dir.cut()
    assert track.stat().st_size >= reported


async def test_finished_tracks_manifest_and_output_survive_a_power_cut(
    powercut_dir: PowerCutDir, settings: Settings, tmp_path: Path
) -> None:
    """The manifest (temp, fsync, rename, directory fsync) and the output (partial, fsync,
    rename, directory fsync) were already durable when acknowledged: this guards them."""
    data, mp4 = os.urandom(20_000), tmp_path / "out.mp4"
    mp4.write_bytes(os.urandom(300_000))
    async with storage_serving(settings) as client:
        session = await client.create_session()
        writer = await client.open_writer(session.id, "audio", "audio/webm", 0)
        await writer.send(0, data, finish=True)
        async for ack in writer.acks():
            if ack.finished:
                break
        writer.cancel()
        begun = await client.update_session(
            pb.UpdateSessionRequest(session_id=session.id, begin_compile=True)
        )
        generation = begun.compile_generation
        assert await client.upload_output(session.id, mp4, generation) == len(mp4.read_bytes())
    powercut_dir.cut()
    async with storage_serving(settings) as client:
        detail = await client.get_session(session.id)
        assert detail.state == pb.SESSION_STATE_COMPILING
        assert detail.compile_generation == generation
        assert [(t.name, t.committed_size, t.finished) for t in detail.tracks] == [
            ("audio", len(data), True)
        ]
        assert detail.output.size == len(mp4.read_bytes())
        assert b"".join([c async for c in client.read(session.id, "output")]) == mp4.read_bytes()


async def test_a_deleted_session_stays_deleted_after_a_power_cut(
    powercut_dir: PowerCutDir, settings: Settings
) -> None:
    """A delete is durable when it answers: the rename out of sight is fsynced."""
    async with storage_serving(settings) as client:
        session = await client.create_session()
        assert await write_acked(client, session.id, "video", b"v" * 1000) == 1000
        await client.delete_session(session.id)
    powercut_dir.cut()
    async with storage_serving(settings) as client:
        listed = (await client.list_sessions()).sessions
        assert session.id not in {s.id for s in listed}
