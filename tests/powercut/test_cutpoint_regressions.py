"""Defects the randomized power-cut suite (test_cutpoints.py) found, each pinned down alone."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from pathlib import Path

from harness import free_port
from powercut.mount import PowerCutDir
from powercut.serving import storage_on
from tapedeck._proto import storage_pb2 as pb
from tapedeck.sessions import track_file_name
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.local import FileAppender, LocalBackend
from tapedeck.storage.records import SessionRecord


class DiesAtNextSave(LocalBackend):
    """Storage dies just before a manifest save, once armed: what a power cut between two
    syscalls does (the save never reaches the disk)."""

    armed = False

    def save(self, record: SessionRecord) -> None:
        if self.armed:
            raise OSError(5, "the power went")
        super().save(record)


def settings_on(path: Path) -> Settings:
    return Settings(data_dir=path, storage_addr=f"127.0.0.1:{free_port()}")


async def recorded_and_queued(client: StorageClient) -> str:
    session = await client.create_session()
    writer = await client.open_writer(session.id, "audio", "audio/webm", 0)
    await writer.send(0, b"a" * 1000, finish=True)
    async for ack in writer.acks():
        if ack.finished:
            break
    writer.cancel()
    await client.update_session(
        pb.UpdateSessionRequest(session_id=session.id, state=pb.SESSION_STATE_QUEUED)
    )
    return session.id


async def begin(client: StorageClient, sid: str) -> int:
    answer = await client.update_session(
        pb.UpdateSessionRequest(session_id=sid, begin_compile=True)
    )
    return answer.compile_generation


async def test_a_retried_compile_cut_after_publishing_leaves_no_output_that_lies(
    powercut_dir: PowerCutDir, tmp_path: Path
) -> None:
    """Found at cut 853 of seed 1030007690: compile 1 published its output and storage
    recorded it, but died before `ready`; the retry (compile 2) published its own output over
    the same file and the power went before the manifest recorded it. The manifest then gave
    compile 1's size and etag for compile 2's bytes."""
    first, second = tmp_path / "first.mp4", tmp_path / "second.mp4"
    first.write_bytes(b"1" * 48_000)
    second.write_bytes(b"2" * 38_000)
    backend = DiesAtNextSave(powercut_dir.path)
    async with storage_on(settings_on(powercut_dir.path), backend) as client:
        sid = await recorded_and_queued(client)
        assert await client.upload_output(sid, first, await begin(client, sid)) == 48_000
        generation = await begin(client, sid)  # the retry
        backend.armed = True
        try:
            await client.upload_output(sid, second, generation)
        except StorageError:
            pass  # published, then the manifest save failed: the power is going
    powercut_dir.cut()
    async with storage_on(settings_on(powercut_dir.path)) as client:
        detail = await client.get_session(sid)
        if detail.HasField("output"):
            data = b"".join([c async for c in client.read(sid, "output")])
            assert (len(data), hashlib.sha256(data).hexdigest()[:32]) == (
                detail.output.size,
                detail.output.etag,
            ), "the output's size and etag are not those of its bytes"


class GatedAppender(FileAppender):
    """Holds a commit in its thread, before its bytes reach the file, while the gate is shut."""

    def __init__(self, path: Path, truncate: bool, gate: threading.Event) -> None:
        super().__init__(path, truncate)
        self.gate, self.waiting = gate, threading.Event()

    def append(self, chunks: list[bytes]) -> int:
        self.waiting.set()
        self.gate.wait()
        return super().append(chunks)


class GatedBackend(LocalBackend):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.appenders: list[GatedAppender] = []

    def open_track(self, session_id: str, track: str, new: bool) -> FileAppender:
        path = self.root / session_id / track_file_name(track)
        appender = GatedAppender(path, new, self.gate)
        self.appenders.append(appender)
        return appender


async def test_a_takeover_of_a_takeover_waits_for_the_first_writers_commit(tmp_path: Path) -> None:
    """Found at cut 173 of seed 3497714481: writer A's commit was in its thread when B took
    over (B waits for A's batch) and C took over B: C waited only for B, read the file's size
    before A's bytes landed, and told the client less than A then acknowledged. The client
    drops what is acknowledged, so it could no longer send what C asked for."""
    backend = GatedBackend(tmp_path / "data")
    async with storage_on(settings_on(tmp_path / "data"), backend) as client:
        sid = (await client.create_session()).id
        a = await client.open_writer(sid, "audio", "audio/webm", 0)
        await a.send(0, b"a" * 1000)
        acks = aiter(a.acks())
        assert (await anext(acks)).committed_size == 1000
        backend.gate.clear()
        await a.send(1000, b"b" * 3)
        await asyncio.to_thread(backend.appenders[0].waiting.wait, 10)  # A's commit is held
        b = asyncio.create_task(client.open_writer(sid, "audio", "audio/webm", 0))
        c = asyncio.create_task(client.open_writer(sid, "audio", "audio/webm", 0))
        await asyncio.wait({c}, timeout=2)  # the defect answers C at once; the fix waits for A
        backend.gate.set()
        acked = 1000
        with contextlib.suppress(StorageError):
            async for ack in acks:
                acked = max(acked, ack.committed_size)
        writer_c = await c
        assert writer_c.committed >= acked, (
            f"C was told {writer_c.committed} bytes are committed, A acknowledged {acked}"
        )
        for writer in (a, writer_c):
            writer.cancel()
        with contextlib.suppress(StorageError):
            (await b).cancel()
