"""Real storage on the power-cut file system: what it acknowledges or reports survives a cut.

Most tests stop storage before the cut (closing a file does not sync it, so this loses nothing
a running storage would have kept); the random one powers off under a running storage. Then a
new storage starts on what survived, as after a reboot.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import free_port
from powercut.mount import PowerCutDir
from storage_fixtures import storage_serving
from tapedeck._proto import storage_pb2 as pb
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError


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


ROUNDS = int(os.environ.get("POWERCUT_ROUNDS", "10"))
TRACKS = ("video", "audio", "screen")


@dataclass
class Stream:
    """One track as its client sees it: the whole recording, and what storage confirmed."""

    sid: str
    track: str
    data: bytes
    confirmed: int = 0  # an ack, or a size storage reported: the client dropped its copy
    finish_confirmed: bool = False


@dataclass
class Schedule:
    """When the power goes: after `acks_left` more acks, or when the round's streams end."""

    powercut_dir: PowerCutDir
    rng: random.Random
    acks_left: int

    def acked(self) -> None:
        self.acks_left -= 1
        if self.acks_left == 0:
            self.powercut_dir.power_off()


async def record(client: StorageClient, stream: Stream, schedule: Schedule) -> None:
    try:
        writer = await client.open_writer(stream.sid, stream.track, "video/webm", 0)
        stream.confirmed = max(stream.confirmed, writer.committed)
        offset = writer.committed
        while offset < len(stream.data):
            end = min(len(stream.data), offset + schedule.rng.randint(200, 9000))
            finish = end == len(stream.data) and schedule.rng.random() < 0.5
            await writer.send(offset, stream.data[offset:end], finish=finish)
            async for ack in writer.acks():
                stream.confirmed = max(stream.confirmed, ack.committed_size)
                stream.finish_confirmed |= ack.finished
                if ack.committed_size == end:
                    break
            offset = end
            schedule.acked()
            if finish:
                break
        writer.cancel()
    except StorageError:
        pass  # the power went: storage refuses from now on


async def test_every_confirmed_byte_survives_cuts_at_random_points(
    powercut_dir: PowerCutDir, settings: Settings
) -> None:
    """Recordings stream into storage while the power goes after a random number of acks.
    After each restart every byte storage confirmed (acked, or reported as committed when a
    writer opened) is there, in order, and confirmed finishes stayed finished."""
    seed = int(os.environ.get("POWERCUT_SEED", "0")) or random.randrange(1, 2**32)
    print(f"power-cut seed {seed} (POWERCUT_SEED={seed} repeats the schedule)")
    rng = random.Random(seed)
    streams: list[Stream] = []
    for round_ in range(ROUNDS):
        async with storage_serving(settings) as client:
            for stream in streams:
                status = await client.query_write_status(stream.sid, stream.track)
                where = f"round {round_}, seed {seed}, {stream.sid}/{stream.track}"
                assert status.committed_size >= stream.confirmed, where
                assert status.complete or not stream.finish_confirmed, where
                if status.committed_size:
                    stored = b"".join([c async for c in client.read(stream.sid, stream.track)])
                    assert stored == stream.data[: len(stored)], where
            for _ in range(rng.randint(1, 2)):
                sid = (await client.create_session()).id
                for track in rng.sample(TRACKS, rng.randint(1, 2)):
                    streams.append(Stream(sid, track, rng.randbytes(rng.randint(1000, 40_000))))
            schedule = Schedule(powercut_dir, random.Random(rng.random()), rng.randint(1, 15))
            await asyncio.gather(
                *(record(client, s, schedule) for s in streams if not s.finish_confirmed)
            )
            if schedule.acks_left > 0:
                powercut_dir.power_off()
        powercut_dir.power_on()
    assert powercut_dir.cuts == ROUNDS
