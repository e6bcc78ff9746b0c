"""Calls that their client cancels (a deadline, a dropped stream) while storage's worker thread
is still at work: the thread cannot be stopped, so nothing may act as if it had.

Each test holds storage's thread at a chosen point (patching a blocking call it makes), cancels
the call from the client, and lets the thread go on."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tapedeck._proto import storage_pb2 as pb
from tapedeck.settings import Settings
from tapedeck.storage import local as backend_module
from tapedeck.storage.client import StorageClient
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.records import SessionRecord
from tapedeck.storage.server import StorageService

HOLD = 10.0  # at most this long does a held thread wait for the test


def in_worker_thread() -> bool:
    return threading.current_thread() is not threading.main_thread()


class Gate:
    """Holds the first worker-thread call of a patched function until `release()`."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._go = threading.Event()
        self._taken = threading.Lock()

    def hold_first(self) -> bool:
        """True (after waiting for release) for the first caller from a worker thread."""
        if not in_worker_thread() or not self._taken.acquire(blocking=False):
            return False
        self.entered.set()
        self._go.wait(HOLD)
        return True

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, HOLD), "storage never got there"

    def release(self) -> None:
        self._go.set()


async def cancelled(call: Callable[[], Any], after: float = 0.3) -> None:
    """Start a storage call and cancel it (as a client deadline does) once it is under way."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call(), after)


async def test_a_cancelled_write_never_closes_a_file_its_thread_still_writes(
    storage: StorageClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing a descriptor while a thread is inside `pwrite` on it would send the rest of the
    batch into whatever file reuses the number: another session's track or manifest."""
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    gate = Gate()
    seen: list[str] = []
    real_pwrite = os.pwrite

    def pwrite(fd: int, data: Any, offset: int) -> int:
        inode = os.fstat(fd).st_ino
        if gate.hold_first():
            try:
                same = os.fstat(fd).st_ino == inode
                seen.append("open" if same else "reused")
            except OSError:
                seen.append("closed")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    await writer.send(0, b"x" * 200_000)
    await gate.wait_entered()
    writer.cancel()
    await asyncio.sleep(0.5)  # storage has seen the cancellation by now
    gate.release()
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert seen == ["open"], "the file was closed under a thread still writing it"


async def test_a_cancelled_manifest_save_keeps_its_lock_until_its_thread_is_done(
    storage: StorageClient, storage_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second save of the same session must not run while a cancelled one's thread still
    writes: sharing the temporary file, the slower one tears the manifest the faster one
    renamed into place, and a torn manifest makes the whole session disappear at the next
    start."""
    session = await storage.create_session()
    gate = Gate()
    real_open = open

    def slow_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        f = real_open(path, *args, **kwargs)
        if str(path).endswith(".tmp"):
            gate.hold_first()  # the temporary manifest is open and empty: hold here
        return f

    ended: list[str] = []
    real_save = LocalBackend.save

    def save(self: LocalBackend, record: SessionRecord) -> None:
        try:
            real_save(self, record)
        finally:
            ended.append(record.error[:1])

    monkeypatch.setattr(backend_module, "open", slow_open, raising=False)
    monkeypatch.setattr(LocalBackend, "save", save)
    await cancelled(
        lambda: storage.update_session(pb.UpdateSessionRequest(session_id=session.id, error="a"))
    )
    await gate.wait_entered()
    second = asyncio.create_task(
        storage.update_session(pb.UpdateSessionRequest(session_id=session.id, error="b" * 2000))
    )
    await asyncio.sleep(0.5)
    gate.release()
    await second
    for _ in range(200):  # the held save has ended too (it may have failed)
        if len(ended) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(ended) == ["a", "b"]
    manifest = storage_settings.data_dir / session.id / "session.json"
    record = SessionRecord.model_validate_json(manifest.read_bytes())  # whole, not torn
    assert record.error == "b" * 2000
    reloaded = StorageService(LocalBackend(storage_settings.data_dir), storage_settings)
    assert session.id in reloaded.registry.records


async def test_a_cancelled_delete_still_deletes(
    storage: StorageClient, storage_settings: Settings
) -> None:
    """A delete cancelled while its job waits for a worker thread must not forget the session
    and leave its files: the session would come back at the next start, and a session created
    with the same id (cluster ids are resource names) would find the old bytes."""
    session = await storage.create_session()
    writer = await storage.open_writer(session.id, "video", "video/webm", 1.0)
    await writer.send(0, b"v" * 1000, finish=True)
    async for ack in writer.acks():
        if ack.finished:
            break
    writer.cancel()
    # Every worker thread busy: storage's delete job has to queue behind these.
    busy = threading.Event()
    loop = asyncio.get_running_loop()
    blockers = [loop.run_in_executor(None, busy.wait, HOLD) for _ in range(40)]
    try:
        await cancelled(lambda: storage.delete_session(session.id))
    finally:
        busy.set()
        await asyncio.gather(*blockers)
    directory = storage_settings.data_dir / session.id
    for _ in range(100):
        if not directory.exists():
            break
        await asyncio.sleep(0.05)
    reloaded = StorageService(LocalBackend(storage_settings.data_dir), storage_settings)
    assert session.id not in reloaded.registry.records, "a deleted session came back"
    assert not directory.exists()


async def test_a_new_session_never_inherits_bytes_left_under_its_id(
    storage: StorageClient, storage_settings: Settings
) -> None:
    """Files left under an id (an interrupted delete, a crashed creation) are not the bytes of
    a new session with that id: its tracks start empty, or the browser would skip its own
    first bytes and the MP4 would hold the old recording."""
    session_id = "reused-id-0001"
    leftover = Path(storage_settings.data_dir / session_id)
    leftover.mkdir(parents=True)
    (leftover / "video.webm").write_bytes(b"old recording" * 100)
    await storage.create_session(session_id)
    writer = await storage.open_writer(session_id, "video", "video/webm", 1.0)
    try:
        assert writer.committed == 0
    finally:
        writer.cancel()
