"""The local-files backend: the seed layout on one volume (the contract is storage/backend.py).

    {data_dir}/{id}/session.json   manifest, written atomically (temp, fsync, rename, fsync dir)
    {data_dir}/{id}/video.webm     append-only tracks
    {data_dir}/{id}/{id}.mp4       the compiled output, published by rename
    {data_dir}/{id}/out-{name}     named outputs of the compile (poster.jpg, hls.m3u8, ...)

`OSError`s never leave this module: a full volume is `StorageFull`, a missing file `NotFound`,
anything else `Unavailable` (errors.py).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tapedeck.durable import fsync_dir
from tapedeck.sessions import (
    OUTPUT,
    TRACKS,
    InvalidSessionId,
    is_output_name,
    validate_session_id,
)
from tapedeck.storage.errors import (
    InvalidArgument,
    NotFound,
    OutOfRange,
    StorageError,
    StorageFull,
    Unavailable,
)
from tapedeck.storage.records import SessionRecord

log = logging.getLogger(__name__)

MANIFEST = "session.json"
READ_CHUNK = 1024 * 1024


def storage_error(exc: OSError) -> StorageError:
    """The contract's error for an `OSError` of the volume."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull("storage is full: no space left on the volume")
    if isinstance(exc, FileNotFoundError):
        return NotFound(f"not found: {exc.strerror}")
    log.error("storage I/O error: %s", exc)
    return Unavailable(f"storage I/O error: {exc.strerror or exc}")


class FileAppender:
    """A track file: `append` writes with `pwrite` after the durable size, then `fdatasync`s."""

    ACCESS = os.O_WRONLY

    def __init__(self, path: Path, truncate: bool = False) -> None:
        flags = self.ACCESS | os.O_CREAT | (os.O_TRUNC if truncate else 0)
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

    def append(self, chunks: list[bytes]) -> int:
        before = self.size
        try:
            self._write(chunks)
            chunks.clear()  # in the page cache now: free them before the (slow) sync
            os.fdatasync(self._fd)
        except OSError as exc:
            self._cut_back(before)
            raise storage_error(exc) from None
        return self.size

    def _write(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                written = os.pwrite(self._fd, view, self.size)
                self.size += written
                view = view[written:]

    def _cut_back(self, size: int) -> None:
        """Bytes written but never made durable go (after ENOSPC: they would be acked later)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, size)
        self.size = size

    def duplicate(self) -> int:
        """Another descriptor of this file, for a reader that may outlive this one (the S3
        tier ships an output's parts from it)."""
        return os.dup(self._fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


_HASHER = ThreadPoolExecutor(1, thread_name_prefix="output-hash")


def _update(digest: hashlib._Hash, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


class OutputWriter(FileAppender):
    """Writes the MP4 beside its final name and publishes it atomically with a content hash."""

    ACCESS = os.O_RDWR  # `duplicate` gives the S3 tier a descriptor it reads parts through

    def __init__(self, partial: Path, final: Path) -> None:
        super().__init__(partial, truncate=True)
        self._partial, self._final = partial, final
        # The ETag hashes the upload's write log: the bytes in order, then the one rewrite
        # (a marker, its offset, its bytes). Without a rewrite that is the content's SHA-256;
        # with one, the log still determines the content, so equal ETags mean equal bytes.
        self._hash = hashlib.sha256()
        self._hash_void = False
        self._rewrite_end: int | None = None  # where the one rewritten region has got to
        self._rewrite_closed = False

    def _write(self, chunks: list[bytes]) -> None:
        self._rewrite_closed = self._rewrite_end is not None  # an append ends the region
        # Hash while writing: both release the GIL, and an MP4 is hundreds of MiB.
        hashed = _HASHER.submit(_update, self._hash, chunks)
        super()._write(chunks)
        hashed.result()

    def _cut_back(self, size: int) -> None:
        # The hash already holds the refused bytes: this output can only be written again.
        self._hash_void = True
        super()._cut_back(size)

    def rewrite(self, offset: int, data: bytes) -> None:
        """Replace committed bytes at `offset` (an MP4's head, filled in at the end): one
        region, once, in order (several calls, each where the last ended)."""
        if self._rewrite_closed or self._rewrite_end not in (None, offset):
            raise OutOfRange(
                "an output may rewrite one region of its committed bytes, once and in order"
            )
        if offset < 0 or offset + len(data) > self.size:
            raise OutOfRange(
                f"a rewrite of {len(data)} bytes at {offset} is not within the "
                f"{self.size} committed bytes"
            )
        self._rewrite_end = offset + len(data)
        self._hash.update(b"\0tapedeck-rewrite\0" + offset.to_bytes(8, "big") + data)
        try:
            view = memoryview(data)
            at = offset
            while view:
                written = os.pwrite(self._fd, view, at)
                at += written
                view = view[written:]
            os.fdatasync(self._fd)
        except OSError as exc:
            self._hash_void = True  # the file may hold part of it: upload again
            raise storage_error(exc) from None

    def seal(self) -> str:
        """Durable and whole, not renamed: the ETag (the S3 tier ships it from here)."""
        if self._hash_void:
            raise Unavailable("the output lost bytes to a failed write; upload it again")
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise storage_error(exc) from None
        return self._hash.hexdigest()[:32]

    def publish(self) -> str:
        etag = self.seal()
        try:
            os.replace(self._partial, self._final)
            fsync_dir(self._final.parent)
        except OSError as exc:
            raise storage_error(exc) from None
        return etag


class LocalBackend:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, session_id: str) -> Path:
        try:
            return self.root / validate_session_id(session_id)
        except InvalidSessionId as err:
            raise InvalidArgument(str(err)) from None

    def _object_path(self, session_id: str, obj: str) -> Path:
        if obj == OUTPUT:
            return self._dir(session_id) / f"{session_id}.mp4"
        if is_output_name(obj):
            return self._dir(session_id) / f"out-{obj}"
        if obj not in TRACKS:
            raise InvalidArgument(f"unknown object {obj[:40]!r}")
        return self._dir(session_id) / f"{obj}.webm"

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

    def load(self, session_id: str) -> SessionRecord:
        try:
            data = (self._dir(session_id) / MANIFEST).read_bytes()
        except OSError as exc:
            raise storage_error(exc) from None
        try:
            return SessionRecord.model_validate_json(data)
        except ValueError:
            raise NotFound(f"session {session_id} has no whole manifest") from None

    def save(self, record: SessionRecord) -> None:
        directory = self._dir(record.id)
        try:
            self._save(directory, record)
        except OSError as exc:
            raise storage_error(exc) from None

    def _save(self, directory: Path, record: SessionRecord) -> None:
        new = not directory.exists()
        directory.mkdir(exist_ok=True)
        # A name of its own: no other save can ever write into this file (not even one that
        # a cancelled call left running), so what is renamed into place is this record whole.
        tmp = directory / f".{MANIFEST}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(record.model_dump_json().encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / MANIFEST)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
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
        except OSError as exc:
            raise storage_error(exc) from None
        try:
            fsync_dir(self.root)
        except OSError as exc:
            raise storage_error(exc) from None
        shutil.rmtree(trash, ignore_errors=True)

    def size(self, session_id: str, obj: str) -> int:
        """The durable size: after a crash the file may hold page-cache bytes never synced, and
        the client drops its copy up to the size it is told."""
        try:
            fd = os.open(self._object_path(session_id, obj), os.O_RDONLY)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise storage_error(exc) from None
        try:
            size = os.fstat(fd).st_size  # then sync: at least these bytes are durable
            os.fdatasync(fd)
            return size
        except OSError as exc:
            raise storage_error(exc) from None
        finally:
            os.close(fd)

    def open_track(self, session_id: str, track: str, new: bool) -> FileAppender:
        path = self._object_path(session_id, track)
        if track not in TRACKS:
            raise InvalidArgument("outputs are opened with open_output")
        try:
            return FileAppender(path, truncate=new)
        except OSError as exc:
            raise storage_error(exc) from None

    def partial_path(self, session_id: str, name: str = OUTPUT) -> Path:
        """Where an output is written until it is published."""
        if name != OUTPUT and not is_output_name(name):
            raise InvalidArgument(f"unknown output {name[:40]!r}")
        final = self._object_path(session_id, name)
        return final.with_name(f".{final.name}.partial")

    def open_output(self, session_id: str, name: str = OUTPUT) -> OutputWriter:
        partial = self.partial_path(session_id, name)  # validates the name
        final = self._object_path(session_id, name)
        try:
            return OutputWriter(partial, final)
        except OSError as exc:
            raise storage_error(exc) from None

    def read(self, session_id: str, obj: str, offset: int, limit: int) -> Iterator[bytes]:
        path = self._object_path(session_id, obj)  # validated now, not at the first chunk
        if offset < 0 or limit < 0:
            raise InvalidArgument("negative offset or limit")
        return self._read(path, offset, limit)

    @staticmethod
    def _read(path: Path, offset: int, limit: int) -> Iterator[bytes]:
        try:
            with open(path, "rb") as f:
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
        except OSError as exc:
            raise storage_error(exc) from None
