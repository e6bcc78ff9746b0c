"""Where bytes live. One small interface so that nothing above storage assumes a local path.

`LocalBackend` keeps the seed layout on a volume:
    {data_dir}/{id}/session.json   manifest, written atomically (temp, fsync, rename, fsync dir)
    {data_dir}/{id}/video.webm     append-only tracks
    {data_dir}/{id}/{id}.mp4       the compiled output, published by rename
An S3-style backend would implement the same methods (tracks as multipart objects, output as a
bucket object). Every method is blocking: the gRPC server calls them in worker threads that a
cancelled call still waits for (storage/threads.py), except closing an appender.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from tapedeck.durable import fsync_dir
from tapedeck.sessions import OUTPUT, track_file_name, validate_session_id
from tapedeck.storage.records import SessionRecord

MANIFEST = "session.json"
READ_CHUNK = 1024 * 1024


class Appender(Protocol):
    """An open object that takes appends; `sync` makes them durable."""

    size: int

    def append(self, chunks: list[bytes]) -> None: ...
    def sync(self) -> None: ...
    def rollback(self, size: int) -> None: ...
    def close(self) -> None: ...


class Backend(Protocol):
    def load_all(self) -> list[SessionRecord]: ...
    def save(self, record: SessionRecord) -> None: ...
    def delete(self, session_id: str) -> None: ...
    def size(self, session_id: str, obj: str) -> int: ...
    def open_track(self, session_id: str, track: str, new: bool) -> Appender: ...
    def open_output(self, session_id: str) -> OutputWriter: ...
    def read(self, session_id: str, obj: str, offset: int, limit: int) -> Iterator[bytes]: ...


class FileAppender:
    def __init__(self, path: Path, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(path, flags, 0o640)
        try:
            self.size = os.fstat(self._fd).st_size
            if self.size:
                # `size` is the first ack: bytes a crashed or cancelled commit wrote but never
                # synced must be durable before the client drops its copy of them.
                os.fdatasync(self._fd)
            else:
                # New (or empty): its directory entry must be durable before any byte in it is
                # acknowledged. A non-empty file's entry was synced here before its first byte.
                fsync_dir(path.parent)
        except OSError:
            os.close(self._fd)
            raise

    def append(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.pwrite(self._fd, view, self.size)
                self.size += written
                view = view[written:]

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def rollback(self, size: int) -> None:
        """Cut bytes that were written but never made durable (e.g. after ENOSPC)."""
        os.ftruncate(self._fd, size)
        self.size = size

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


_HASHER = ThreadPoolExecutor(1, thread_name_prefix="output-hash")


def _update(digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


class OutputWriter(FileAppender):
    """Writes the MP4 beside its final name and publishes it atomically with a content hash."""

    def __init__(self, partial: Path, final: Path) -> None:
        super().__init__(partial, truncate=True)
        self._partial, self._final = partial, final
        self._hash = hashlib.sha256()

    def append(self, chunks: list[bytes]) -> None:
        # Hash while writing: both release the GIL, and an MP4 is hundreds of MiB.
        hashed = _HASHER.submit(_update, self._hash, chunks)
        super().append(chunks)
        hashed.result()

    def rollback(self, size: int) -> None:
        raise OSError("output writes cannot be rolled back; start the upload again")

    def publish(self) -> str:
        self.sync()
        os.replace(self._partial, self._final)
        fsync_dir(self._final.parent)
        return self._hash.hexdigest()[:32]


class LocalBackend:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, session_id: str) -> Path:
        return self.root / validate_session_id(session_id)

    def _object_path(self, session_id: str, obj: str) -> Path:
        if obj == OUTPUT:
            return self._dir(session_id) / f"{session_id}.mp4"
        return self._dir(session_id) / track_file_name(obj)

    def load_all(self) -> list[SessionRecord]:
        for trash in self.root.glob(".deleted-*"):
            shutil.rmtree(trash, ignore_errors=True)  # a delete that a crash interrupted
        for tmp in self.root.glob(f"[!.]*/.{MANIFEST}.*.tmp"):
            tmp.unlink(missing_ok=True)  # a manifest save that a crash interrupted
        records = []
        for manifest in sorted(self.root.glob(f"[!.]*/{MANIFEST}")):
            try:
                records.append(SessionRecord.model_validate_json(manifest.read_bytes()))
            except ValueError:
                continue  # a foreign or damaged directory is not a session; leave it alone
        return records

    def save(self, record: SessionRecord) -> None:
        directory = self._dir(record.id)
        new = not directory.exists()
        directory.mkdir(exist_ok=True)
        # A name of its own: no other save can ever write into this file (not even one that
        # a cancelled call left running), so what is renamed into place is this record whole.
        tmp = directory / f".{MANIFEST}.{secrets.token_hex(6)}.tmp"
        with open(tmp, "wb") as f:
            f.write(record.model_dump_json().encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST)
        fsync_dir(directory)
        if new:
            fsync_dir(self.root)

    def delete(self, session_id: str) -> None:
        """Gone for good once this returns: renamed out of sight and the rename fsynced, so
        neither a crash nor a power cut mid-delete brings back a half-deleted session."""
        directory = self._dir(session_id)
        trash = self.root / f".deleted-{session_id}"
        shutil.rmtree(trash, ignore_errors=True)  # an earlier delete of this id, interrupted
        try:
            os.replace(directory, trash)
        except FileNotFoundError:
            return
        fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def size(self, session_id: str, obj: str) -> int:
        """The durable size: after a crash the file may hold page-cache bytes never synced, and
        the client drops its copy up to the size it is told."""
        try:
            fd = os.open(self._object_path(session_id, obj), os.O_RDONLY)
        except FileNotFoundError:
            return 0
        try:
            size = os.fstat(fd).st_size  # then sync: at least these bytes are durable
            os.fdatasync(fd)
            return size
        finally:
            os.close(fd)

    def open_track(self, session_id: str, track: str, new: bool) -> FileAppender:
        """`new`: the track was just added to the manifest, so whatever a file of that name
        holds (left by a deleted session of the same id) is not its bytes."""
        return FileAppender(self._object_path(session_id, track), truncate=new)

    def open_output(self, session_id: str) -> OutputWriter:
        final = self._object_path(session_id, OUTPUT)
        return OutputWriter(final.with_name(f".{final.name}.partial"), final)

    def read(self, session_id: str, obj: str, offset: int, limit: int) -> Iterator[bytes]:
        with open(self._object_path(session_id, obj), "rb") as f:
            f.seek(offset)
            remaining = limit if limit > 0 else None
            while remaining is None or remaining > 0:
                want = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                chunk = f.read(want)
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
