"""The S3 tier: the volume in front (acks after fdatasync, as always), a bucket behind it.

    volume (data_dir)                        bucket ({prefix}...)
    {id}/session.json                        sessions/{id}/session.json     (a copy, kept fresh)
    {id}/video.webm       the unshipped tail sessions/{id}/video.webm       (completed upload)
    {id}/.video.upload.json  upload id, part ETags, how much of the file is punched
    {id}/.{id}.mp4.partial  the output's head window and unshipped tail, while it is written
    {id}/.output.{token}.output-upload.json  its upload id (a restart aborts it)
                                             sessions/{id}/{id}.mp4         (the output)

Appends go to the volume through `LocalBackend`'s file sinks and are acknowledged after
`fdatasync`, exactly as without the tier. A shipper (one thread running an asyncio loop with
the aiobotocore client) follows each track: every `part_size` durable bytes become the next
part of the track's multipart upload; the upload id and part ETags are saved beside the
session after every part, so a restarted storage continues the same upload. Shipped bytes older
than `volume_tail` are punched out of the file (its size stays, its blocks go). When the
manifest says a track is finished (or the session left `recording`), the last part is sent and
the object completed; then the whole file is punched. When the bucket does not answer (or
refuses), recording goes on from the volume and the shipper retries with backoff: the volume's
free space is the only limit, reported as `StorageFull` like without the tier.

An output (the MP4 a follower uploads while the session records) ships the same way while it
grows, but keeps the parts holding its head on the volume until `publish`: the one rewrite of
the head lands there, and those parts are uploaded again (S3 keeps the last upload of a part
number) before the upload is completed (`TieredOutputSink`).

Reads: a completed track and the output come from the bucket (ranged GETs); an unfinished
track from the volume. Bytes of an unfinished track that were already punched are not readable
until it completes (S3 cannot read the parts of an incomplete upload): keep `volume_tail` at
least as long as the lag of whatever reads live tracks (the embedded speculative compiles).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import io
import logging
import os
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from tapedeck.durable import fsync_dir
from tapedeck.sessions import (
    OUTPUT,
    TRACKS,
    InvalidSessionId,
    State,
    is_output_name,
    track_file_name,
    validate_session_id,
)
from tapedeck.settings import S3Settings
from tapedeck.storage import shipping
from tapedeck.storage.errors import InvalidArgument, NotFound, StorageError, Unavailable
from tapedeck.storage.local import (
    MANIFEST,
    FileAppender,
    LocalBackend,
    OutputWriter,
    storage_error,
)
from tapedeck.storage.objectstore import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    Part,
    StoreRefused,
    listing_key,
    manifest_key,
    output_key,
    track_key,
)
from tapedeck.storage.records import SessionRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
Key = tuple[str, str]  # (session id, track)
PARTS_IN_FLIGHT = 8
"""Parts being read and sent at once across all tracks: hundreds of live tracks must not each
hold a part (8 MiB) in memory at the same time."""

_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
_fallocate.restype = ctypes.c_int


def punch_hole(path: Path, start: int, end: int) -> bool:
    """Free the blocks of bytes [start, end) of a file, keeping its size; False where the file
    system cannot (then the volume is simply not trimmed)."""
    if end <= start:
        return True
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return True
    try:
        return punch_fd(fd, start, end)
    finally:
        os.close(fd)


def punch_fd(fd: int, start: int, end: int) -> bool:
    """`punch_hole` on an open file (an output's, which a newer one may replace by name)."""
    if end <= start:
        return True
    flags = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _fallocate(fd, flags, start, end - start) != 0:
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            return False
        raise OSError(err, os.strerror(err))
    return True


def _refused_message(error: ObjectStoreError) -> str:
    if isinstance(error, StoreRefused):
        return f"the bucket refused: {error}"
    return f"the bucket does not answer: {error}"


class _Shipper:
    """The asyncio side: one loop in one thread owns the client and every upload."""

    def __init__(self, settings: S3Settings) -> None:
        self.store = ObjectStore(settings)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="s3-shipper", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise Unavailable(f"cannot open the bucket client: {self._error}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.store.__aenter__())
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(self.store.__aexit__(None, None, None))
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the loop and wait (from a worker thread, never from the loop)."""
        return self.submit(coro).result()

    def stop(self) -> None:
        async def cancel_all() -> None:
            while True:  # a task ending may start another (a released output's abort)
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not tasks:
                    return
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.call(cancel_all())
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class TieredTrackSink:
    """A track on the volume whose durable bytes the shipper follows."""

    def __init__(self, tier: S3TieredBackend, key: Key, inner: FileAppender) -> None:
        self._tier, self._key, self._inner = tier, key, inner
        tier._durable_seen(key, inner.size)

    @property
    def size(self) -> int:
        return self._inner.size

    def append(self, chunks: list[bytes]) -> int:
        size = self._inner.append(chunks)
        self._tier._durable_seen(self._key, size)
        return size

    def close(self) -> None:
        self._inner.close()


def _is_output(obj: str) -> bool:
    return obj == OUTPUT or is_output_name(obj)


class TieredOutputSink:
    """The output, shipped while it grows. Appends are durable on the volume (hashed as they
    go) and acknowledged as without the tier; every whole part then becomes the next part of
    one multipart upload (the shipper's loop), and shipped bytes leave the volume but for the
    head window: the parts holding the MP4's head (`shipping.head_window`), which the one
    rewrite replaces there and `publish` uploads again (S3 keeps the last upload of a part
    number). `publish` sends the last part (and the rewritten ones) and completes; the volume
    then keeps nothing. An output that is not published (its stream broke, a newer one
    replaced it, its session was deleted) has its upload aborted; a restart finds uploads it
    did not end by their state files (`S3TieredBackend.load_all`)."""

    def __init__(
        self, tier: S3TieredBackend, session_id: str, name: str, inner: OutputWriter
    ) -> None:
        self._tier, self._id, self._name, self._inner = tier, session_id, name, inner
        self._partial = tier.volume.partial_path(session_id, name)
        self._object = output_key(session_id, name)
        self._part_size = tier.settings.part_size
        self._state_path = tier._dir(session_id) / (
            f".{name}.{secrets.token_hex(4)}.output-upload.json"
        )
        # Reads and punches use a descriptor of their own: they may outlive the writer's.
        try:
            self._fd = inner.duplicate()
        except OSError as exc:
            inner.close()
            raise storage_error(exc) from None
        # Shared with the writer's threads, under `_lock`:
        self._lock = threading.Lock()
        self._committed = inner.size
        self._due = self._part_size  # the committed size that gives the pump its next part
        self._keep: int | None = None  # the head window, once known
        self._trimmed = (0, 0)  # bytes [start, end) punched out of the volume
        self._rewritten: tuple[int, int] | None = None
        # The shipper's loop only:
        self._upload_id = ""
        self._etags: dict[int, str] = {}
        self._walk = 0  # the next top-level box to read, looking for the head's end
        self._pump: asyncio.Task[None] | None = None
        self._ended = False  # publishing or released: the pump ships no more
        self._published = False
        self._released: asyncio.Task[None] | None = None
        self._finishing: asyncio.Task[Any] | None = None
        self._backing_off = False

    @property
    def size(self) -> int:
        return self._inner.size

    def append(self, chunks: list[bytes]) -> int:
        size = self._inner.append(chunks)
        with self._lock:
            self._committed = size
            due = size >= self._due
        if due:
            self._tier._shipper.loop.call_soon_threadsafe(self._start_pump)
        return size

    def rewrite(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if 0 <= offset < end <= self._inner.size:  # else the volume's sink says what is wrong
            with self._lock:
                trimmed = shipping.rewrite_reaches_trimmed(
                    offset, end, self._inner.size, self._part_size, self._trimmed
                )
                if not trimmed:  # from now on nothing more is punched
                    low, high = self._rewritten or (offset, end)
                    self._rewritten = (min(low, offset), max(high, end))
            if trimmed:
                raise Unavailable(
                    f"a rewrite at {offset} needs bytes of {self._name} that were shipped and "
                    "trimmed from the volume (beyond its head): upload it again"
                )
        self._inner.rewrite(offset, data)

    def publish(self) -> str:
        try:
            etag = self._inner.seal()  # durable on the volume: the bytes the parts come from
            self._tier._shipper.call(self._finish())
        except ObjectStoreError as e:
            raise Unavailable(f"the output could not be stored: {_refused_message(e)}") from None
        except OSError as e:
            raise storage_error(e) from None
        finally:
            if not self._published:
                self._tier._shipper.call(self.release())  # aborts the upload
            self._partial.unlink(missing_ok=True)
        # An output published before the tier was on is read from the volume: not any more.
        self._tier._output_path(self._id, self._name).unlink(missing_ok=True)
        return etag

    def close(self) -> None:
        """On the server's event loop: what is left (an abort) runs on the shipper's."""
        self._inner.close()
        with contextlib.suppress(RuntimeError):  # the tier is closed: a restart aborts it
            self._tier._shipper.loop.call_soon_threadsafe(self._start_release)

    # --- on the shipper's loop --------------------------------------------------------------

    def _start_pump(self) -> None:
        if not self._ended and (self._pump is None or self._pump.done()):
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())

    async def _run_pump(self) -> None:
        backoff = 0.2
        while not self._ended:
            number = len(self._etags) + 1
            with self._lock:
                self._due = number * self._part_size
                if self._committed < self._due:
                    return
            try:
                async with self._tier._parts_in_flight:
                    await self._upload_part(number)
                backoff = 0.2
                await self._trim()
            except (ObjectStoreError, OSError) as e:
                if self._ended:
                    return  # publish ships what is left itself (and reports)
                if isinstance(e, OSError) and not self._tier._session_exists((self._id, "")):
                    return  # deleted meanwhile
                message = _refused_message(e) if isinstance(e, ObjectStoreError) else str(e)
                self._tier._report(f"{self._id}/{self._name}", message)
                self._backing_off = True
                try:
                    await asyncio.sleep(backoff)
                finally:
                    self._backing_off = False
                backoff = min(backoff * 2, 10.0)

    async def _begin_upload(self) -> None:
        store = self._tier._shipper.store
        if not self._upload_id:
            upload_id = self._upload_id = await store.create_multipart(self._object)
            state = shipping.OutputUpload(name=self._name, upload_id=upload_id)
            try:  # before any part: a restart must find the upload to abort it
                await _blocking(_save_json, self._state_path, state.model_dump_json().encode())
            except OSError:
                self._upload_id = ""
                with contextlib.suppress(ObjectStoreError):
                    await store.abort_multipart(self._object, upload_id)
                raise

    async def _upload_part(self, number: int) -> None:
        await self._begin_upload()
        store = self._tier._shipper.store
        length = min(self._part_size, self._inner.size - (number - 1) * self._part_size)
        data = await _blocking(_pread_fd, self._fd, (number - 1) * self._part_size, length)
        part = await store.upload_part(self._object, self._upload_id, number, data)
        self._etags[number] = part.etag

    async def _trim(self) -> None:
        """Punch the shipped parts beyond the head window out of the volume."""
        while self._keep is None:
            with self._lock:
                committed = self._committed
            length = max(0, min(16, committed - self._walk))
            header = await _blocking(_pread_bytes, self._fd, self._walk, length)
            step = shipping.next_box(self._walk, header)
            if isinstance(step, shipping.NeedBytes):
                return
            if isinstance(step, shipping.NextBox):
                self._walk = step.offset
                continue
            head = step.end if isinstance(step, shipping.HeadEnds) else None
            with self._lock:
                self._keep = shipping.head_window(head, self._part_size)
                self._trimmed = (self._keep, self._keep)
        shipped = len(self._etags) * self._part_size  # parts 1..n, in order
        with self._lock:
            start, end = self._trimmed
            if self._rewritten is not None or not self._tier._can_punch or shipped <= end:
                return
            self._trimmed = (start, shipped)  # before the hole: a rewrite checks against it
        if not await _blocking(punch_fd, self._fd, end, shipped):
            log.warning("s3 tier: the volume cannot punch holes: outputs are not trimmed")
            self._tier._can_punch = False

    async def _finish(self) -> None:
        """The rest of the upload, once the output is whole: the parts not shipped yet and the
        rewritten ones, then the completion (or one PUT for an output of one part)."""
        self._ended = True
        self._finishing = asyncio.current_task()
        if self._pump is not None:
            if self._backing_off:
                self._pump.cancel()  # the bucket failed it: this sends it or reports why
            await asyncio.wait([self._pump])  # its part in flight lands (else sent below)
        store, size, part_size = self._tier._shipper.store, self._inner.size, self._part_size
        if not self._upload_id and size <= part_size:
            await store.put(self._object, await _blocking(_pread_fd, self._fd, 0, size))
            self._published = True
            return
        count = -(-size // part_size)
        numbers = {n for n in range(1, count + 1) if n not in self._etags}
        with self._lock:
            if self._rewritten is not None:
                numbers |= set(shipping.parts_of(*self._rewritten, part_size))
        await self._begin_upload()
        gate = asyncio.Semaphore(4)

        async def one(number: int) -> None:
            async with gate:
                await self._upload_part(number)

        # Every part ends before this returns (the descriptor is closed after it), failed or not.
        done = await asyncio.gather(*(one(n) for n in sorted(numbers)), return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException):
                raise result
        parts = [Part(n, self._etags[n]) for n in range(1, count + 1)]
        await store.complete_multipart(self._object, self._upload_id, parts)
        self._published = True
        await _blocking(self._state_path.unlink, True)

    def _start_release(self) -> None:
        if self._released is None:
            self._released = asyncio.get_running_loop().create_task(self._do_release())

    async def release(self) -> None:
        self._start_release()
        assert self._released is not None
        await asyncio.shield(self._released)

    async def _do_release(self) -> None:
        """Ends the sink for good: stops the pump, closes the descriptor once nothing reads
        through it, and has an upload that was not completed aborted (in the background,
        retried while the bucket does not answer)."""
        self._ended = True
        for task in (self._pump, self._finishing):
            if task is None or task is asyncio.current_task():
                continue
            if task is self._pump:
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._tier._output_released((self._id, self._name), self)
        if self._upload_id and not self._published:
            self._tier._abort_later(self._object, self._upload_id, self._state_path)


class S3TieredBackend:
    """The contract (storage/backend.py) over a volume and a bucket; see the module."""

    def __init__(self, data_dir: Path, settings: S3Settings) -> None:
        self.volume = LocalBackend(data_dir)
        self.settings = settings
        self.volume_tail = settings.volume_tail
        self._shipper = _Shipper(settings)
        self._states: dict[Key, shipping.UploadState] = {}
        self._durable: dict[Key, int] = {}
        self._wake_at: dict[Key, int | None] = {}
        """Per track, the durable size that gives the shipper work (shipping.wake_at); a
        track not in it wakes it at every new size."""
        self._finished: set[Key] = set()
        self._pumps: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._manifests: dict[str, asyncio.Task[None]] = {}
        self._lock = threading.Lock()
        self._can_punch = True
        self._parts_in_flight = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self._outputs: dict[Key, TieredOutputSink] = {}
        """Outputs being written (session id, name): a newer one of the same name ends the
        older first, whose pump must not read or punch the file the newer one truncates."""
        self._aborts: set[asyncio.Task[None]] = set()
        self.last_error = ""
        """The latest refusal or silence of the bucket ("" once it answers again)."""
        if settings.lifecycle_days > 0:
            self._shipper.submit(self._lifecycle_rule()).add_done_callback(_log_failure)

    def set_lifecycle_rule(self) -> None:
        """The bucket rule that aborts uploads abandoned for `lifecycle_days` (a deleted
        session's, a volume lost for good)."""
        self._shipper.call(self._lifecycle_rule())

    async def _lifecycle_rule(self) -> None:
        await self._shipper.store.abort_incomplete_uploads_after(self.settings.lifecycle_days)

    # --- keys and files -------------------------------------------------------------------

    def _dir(self, session_id: str) -> Path:
        try:
            return self.volume.root / validate_session_id(session_id)
        except InvalidSessionId as err:
            raise InvalidArgument(str(err)) from None

    def _check(self, session_id: str, obj: str) -> None:
        """Session id and object name validated before any path or key."""
        self._dir(session_id)
        if not _is_output(obj) and obj not in TRACKS:
            raise InvalidArgument(f"unknown object {obj[:40]!r}")

    def _state_path(self, key: Key) -> Path:
        return self._dir(key[0]) / f".{key[1]}.upload.json"

    def _track_path(self, key: Key) -> Path:
        self._check(*key)
        return self._dir(key[0]) / track_file_name(key[1])

    def _output_path(self, session_id: str, name: str = OUTPUT) -> Path:
        """Where the volume keeps an output until it is in the bucket (LocalBackend's names)."""
        if name == OUTPUT:
            return self._dir(session_id) / f"{session_id}.mp4"
        return self._dir(session_id) / f"out-{name}"

    def _state(self, key: Key) -> shipping.UploadState | None:
        with self._lock:
            state = self._states.get(key)
        if state is not None:
            return state
        try:
            data = self._state_path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise Unavailable(f"storage I/O error: {e.strerror}") from None
        state = shipping.UploadState.model_validate_json(data)
        with self._lock:
            return self._states.setdefault(key, state)

    def _save_state(self, key: Key, state: shipping.UploadState) -> None:
        path = self._state_path(key)
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        with open(tmp, "wb") as f:
            f.write(state.model_dump_json().encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    # --- the contract ---------------------------------------------------------------------

    def load_all(self) -> list[SessionRecord]:
        records = self.volume.load_all()
        self._abort_orphans()
        for record in records:
            self._follow(record)
            if record.state not in (State.READY, State.FAILED, State.EXPIRED):
                self._ship_manifest(record.id)
        return records

    def load(self, session_id: str) -> SessionRecord:
        return self.volume.load(session_id)

    def save(self, record: SessionRecord) -> None:
        self.volume.save(record)
        self._ship_manifest(record.id)
        self._follow(record)

    def delete(self, session_id: str) -> None:
        self._dir(session_id)  # validated before anything
        try:
            created: int | None = self.volume.load(session_id).created_at_ms
        except (NotFound, InvalidArgument, Unavailable):
            created = None
        try:
            self._shipper.call(self._forget(session_id))  # ends manifest sends first
            if created is not None:
                self._shipper.call(self._shipper.store.delete(listing_key(session_id, created)))
        except ObjectStoreError as e:
            raise Unavailable(f"cannot delete {session_id}: {_refused_message(e)}") from None
        self.volume.delete(session_id)

    def size(self, session_id: str, obj: str) -> int:
        self._check(session_id, obj)
        if _is_output(obj) and self._output_path(session_id, obj).exists():
            return self.volume.size(session_id, obj)  # published before the tier was on
        if _is_output(obj):
            try:
                head = self._shipper.store.head(output_key(session_id, obj))
                return self._shipper.call(head).size
            except ObjectNotFound:
                return 0
            except ObjectStoreError as e:
                raise Unavailable(_refused_message(e)) from None
        size = self.volume.size(session_id, obj)
        key = (session_id, obj)
        self._durable_seen(key, size)
        return size

    def open_track(self, session_id: str, track: str, new: bool) -> TieredTrackSink:
        if _is_output(track):
            raise InvalidArgument("an output is opened with open_output")
        key = (session_id, track)
        self._check(*key)
        if new:
            # What this name held (a deleted session of the same id) is not this track's: its
            # upload is abandoned (the lifecycle rule removes it) and its state forgotten
            # before the file is emptied, so no shipper reads the new bytes as the old ones'.
            self._shipper.call(self._cancel_pump(key))
            with self._lock:
                self._states.pop(key, None)
                self._durable.pop(key, None)
                self._wake_at.pop(key, None)
                self._finished.discard(key)
            try:
                self._state_path(key).unlink(missing_ok=True)
            except OSError as e:
                raise Unavailable(f"storage I/O error: {e.strerror}") from None
        return TieredTrackSink(self, key, self.volume.open_track(session_id, track, new))

    def open_output(self, session_id: str, name: str = OUTPUT) -> TieredOutputSink:
        self.volume.partial_path(session_id, name)  # validates id and name before anything
        key = (session_id, name)
        with self._lock:
            older = self._outputs.pop(key, None)
        if older is not None:  # a newer compile (or a retried stream): the older upload is void
            self._shipper.call(older.release())
        sink = TieredOutputSink(self, session_id, name, self.volume.open_output(session_id, name))
        with self._lock:
            self._outputs[key] = sink
        return sink

    def _output_released(self, key: Key, sink: TieredOutputSink) -> None:
        with self._lock:
            if self._outputs.get(key) is sink:
                del self._outputs[key]

    def _abort_later(self, name: str, upload_id: str, state_path: Path) -> None:
        """On the loop: abort an upload nobody will complete, retrying while the bucket does
        not answer; its state file goes once it is aborted (a restart aborts it otherwise)."""
        task = asyncio.get_running_loop().create_task(self._abort(name, upload_id, state_path))
        self._aborts.add(task)
        task.add_done_callback(self._aborts.discard)

    async def _abort(self, name: str, upload_id: str, state_path: Path) -> None:
        backoff = 0.2
        while True:
            try:
                await self._shipper.store.abort_multipart(name, upload_id)
                break
            except ObjectStoreError as e:
                self._report(name, _refused_message(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        with contextlib.suppress(OSError):
            await _blocking(state_path.unlink, True)

    def _abort_orphans(self) -> None:
        """At start: every output upload a former run began and never ended (outputs never
        resume: a stream that opens one starts it anew) is aborted, found by its state file,
        and its partial file goes."""
        live = {sink._state_path for sink in list(self._outputs.values())}
        for path in self.volume.root.glob("[!.]*/.*.output-upload.json"):
            if path in live:
                continue
            try:
                session_id = validate_session_id(path.parent.name)
                upload = shipping.OutputUpload.model_validate_json(path.read_bytes())
                name = upload.name
                partial = self.volume.partial_path(session_id, name)
            except (OSError, ValueError, InvalidSessionId, InvalidArgument) as e:
                log.warning("s3 tier: ignoring %s: %s", path, e)
                continue
            with self._lock:
                writing = (session_id, name) in self._outputs
            if not writing:
                partial.unlink(missing_ok=True)
            key = output_key(session_id, name)
            self._shipper.loop.call_soon_threadsafe(self._abort_later, key, upload.upload_id, path)

    def read(self, session_id: str, obj: str, offset: int, limit: int) -> Iterator[bytes]:
        self._check(session_id, obj)  # now, not at the first chunk
        if offset < 0 or limit < 0:
            raise InvalidArgument("negative offset or limit")
        if _is_output(obj) and self._output_path(session_id, obj).exists():
            return self.volume.read(session_id, obj, offset, limit)  # from before the tier
        if _is_output(obj):
            return self._bucket_read(output_key(session_id, obj), offset, limit)
        return self._track_read((session_id, obj), offset, limit)

    def presign_read(self, session_id: str, obj: str, expires_seconds: int, filename: str) -> str:
        """The `Presigning` capability: a GET of the finished object for the public endpoint."""
        self._check(session_id, obj)
        if _is_output(obj):
            name = output_key(session_id, obj)
        else:
            name = track_key(session_id, obj)
        disposition = f'attachment; filename="{filename}"' if filename else ""
        return self._shipper.call(
            self._shipper.store.presign_get(name, expires_seconds, disposition)
        )

    def close(self) -> None:
        """The `Closing` capability: stop the shipper (what it did not send stays queued on the
        volume, and the next start continues it)."""
        self._shipper.stop()

    # --- reads ----------------------------------------------------------------------------

    def _bucket_read(self, name: str, offset: int, limit: int) -> Iterator[bytes]:
        chunks = self._shipper.store.read(name, offset, limit)
        try:
            while True:
                try:
                    chunk = self._shipper.call(_next(chunks))
                except ObjectNotFound:
                    raise NotFound(f"{name.rsplit('/', 1)[-1]} not found") from None
                except ObjectStoreError as e:
                    raise Unavailable(_refused_message(e)) from None
                if not chunk:
                    return
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                self._shipper.call(chunks.aclose())

    def _track_read(self, key: Key, offset: int, limit: int) -> Iterator[bytes]:
        end = offset + limit if limit else None
        position = offset
        while end is None or position < end:
            state = self._state(key)
            source = shipping.read_source(state, position)
            if isinstance(source, shipping.FromBucket):
                rest = 0 if end is None else end - position
                yield from self._bucket_read(track_key(*key), position, rest)
                return
            if isinstance(source, shipping.Shipped):
                if self._await_completion(key):
                    continue  # finished a moment ago: its last part is on the way
                raise Unavailable(
                    f"bytes from {position} of {key[1]} are shipped but its upload is not "
                    "complete yet: readable once the track finishes"
                )
            want = shipping_chunk if end is None else min(shipping_chunk, end - position)
            got = b"".join(self.volume.read(key[0], key[1], position, want))
            if not got:
                return
            after = self._state(key)
            if after is not None and after.punched > position:
                continue  # punched while read (zeros?) or completed meanwhile: decide again
            yield got
            position += len(got)

    def _await_completion(self, key: Key, timeout: float = 30.0) -> bool:
        """A finished track whose upload is being completed (a compile that starts right
        after the last ack) is worth a short wait; a live one is not."""
        with self._lock:
            if key not in self._finished:
                return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self._state(key)
            if state is not None and state.completed:
                return True
            time.sleep(0.1)
        return False

    # --- the shipper ----------------------------------------------------------------------

    def _durable_seen(self, key: Key, size: int) -> None:
        """Every ack passes here: it wakes the shipper only when a part is due (or the track
        is new to it), not at every append of hundreds of live tracks."""
        with self._lock:
            if size <= self._durable.get(key, -1):
                return
            self._durable[key] = size
            if key in self._wake_at:
                due = self._wake_at[key]
                if due is None or size < due:
                    return
        self._wake(key)

    def _follow(self, record: SessionRecord) -> None:
        """Tracks the manifest says are over get their upload completed."""
        for name, track in record.tracks.items():
            if name not in TRACKS:
                continue
            key = (record.id, name)
            if track.finished or record.state != State.RECORDING:
                with self._lock:
                    self._finished.add(key)
            self._wake(key)

    def _wake(self, key: Key) -> None:
        self._shipper.loop.call_soon_threadsafe(self._start_pump, key)

    def _start_pump(self, key: Key) -> None:
        self._dirty.add(key)
        if key not in self._pumps:
            self._pumps[key] = asyncio.get_running_loop().create_task(self._pump(key))

    async def _pump(self, key: Key) -> None:
        backoff = 0.2
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                try:
                    await self._ship(key)
                    if self.last_error:
                        log.info("the bucket answers again")
                    self.last_error = ""
                    backoff = 0.2
                except ValueError as e:  # a plan that cannot be (too many parts)
                    log.error("s3 tier: %s/%s cannot be shipped: %s", key[0], key[1], e)
                    self.last_error = str(e)
                    return
                except (ObjectStoreError, StorageError, OSError) as e:
                    if isinstance(e, StorageError | OSError) and not self._session_exists(key):
                        return  # deleted meanwhile
                    message = _refused_message(e) if isinstance(e, ObjectStoreError) else str(e)
                    self._report(f"{key[0]}/{key[1]}", message)
                    self._dirty.add(key)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            if self._pumps.get(key) is asyncio.current_task():
                del self._pumps[key]

    def _report(self, what: str, message: str) -> None:
        """Log each new reason once, whichever upload meets it first (tracks and manifests
        share it: a reason first met by a manifest was otherwise never logged)."""
        if message != self.last_error:
            log.warning("s3 tier: %s not shipped: %s", what, message)
        self.last_error = message

    def _session_exists(self, key: Key) -> bool:
        return (self._dir(key[0]) / MANIFEST).exists()

    async def _ship(self, key: Key) -> None:
        state = await asyncio.to_thread(self._state, key)
        if state is None:
            state = shipping.UploadState(part_size=self.settings.part_size)
        durable = self._durable.get(key)
        if durable is None:
            durable = await asyncio.to_thread(self.volume.size, key[0], key[1])
            with self._lock:
                durable = self._durable.setdefault(key, durable)
        store, name, path = self._shipper.store, track_key(*key), self._track_path(key)
        while True:
            with self._lock:
                durable = max(durable, self._durable.get(key, 0))
                finished = key in self._finished
            action = shipping.plan(state, durable, finished)
            if isinstance(action, shipping.Idle):
                with self._lock:  # from here only a whole part (or the finish) wakes it
                    due = self._wake_at[key] = shipping.wake_at(state)
                    if due is not None and self._durable.get(key, 0) >= due:
                        self._dirty.add(key)  # a part became due meanwhile: another round
                return
            new = state.model_copy(deep=True)
            if isinstance(action, shipping.CreateUpload):
                new.upload_id = await store.create_multipart(name)
            elif isinstance(action, shipping.UploadPart):
                async with self._parts_in_flight:  # memory: at most PARTS_IN_FLIGHT parts
                    data = await asyncio.to_thread(_pread, path, action.offset, action.length)
                    part = await store.upload_part(name, state.upload_id, action.number, data)
                new.parts.append(
                    shipping.ShippedPart(number=part.number, etag=part.etag, size=action.length)
                )
            elif isinstance(action, shipping.PutWhole):
                data = await asyncio.to_thread(_pread, path, 0, action.length)
                await store.put(name, data)
                if state.upload_id:
                    await store.abort_multipart(name, state.upload_id)
                new = shipping.UploadState(
                    part_size=state.part_size, completed=True, size=action.length
                )
            elif isinstance(action, shipping.Complete):
                parts = [Part(p.number, p.etag) for p in state.parts]
                try:
                    await store.complete_multipart(name, state.upload_id, parts)
                except ObjectNotFound:
                    # Completed before a crash that lost the state saying so?
                    if (await store.head(name)).size != state.shipped:
                        raise
                new.completed, new.size = True, state.shipped
            await self._commit(key, new)
            state = new
            await self._trim(key, state)
            state = self._states.get(key, state)

    async def _commit(self, key: Key, state: shipping.UploadState) -> None:
        if not await asyncio.to_thread(self._session_exists, key):
            raise NotFound("session deleted while shipping")
        await asyncio.to_thread(self._save_state, key, state)
        with self._lock:
            self._states[key] = state

    async def _trim(self, key: Key, state: shipping.UploadState) -> None:
        """Punch shipped bytes out of the volume. The new `punched` is saved (and known to
        readers) before the hole exists: a crash in between leaves bytes that reads refuse,
        never a hole that reads take for data. Punching from 0 again is free on holes."""
        if not self._can_punch:
            return
        target = shipping.punch_to(state, self.volume_tail)
        if target <= state.punched:
            return
        new = state.model_copy(update={"punched": target})
        await self._commit(key, new)
        try:
            # A complete object's file goes whole, its last partial page too (KEEP_SIZE).
            end = target + (-target % 4096 if new.completed else 0)
            supported = await asyncio.to_thread(punch_hole, self._track_path(key), 0, end)
        except OSError as e:
            log.warning("s3 tier: cannot trim %s/%s on the volume: %s", key[0], key[1], e)
            supported = True  # the bytes stay; the next part tries again
        if not supported:
            log.warning("s3 tier: the volume cannot punch holes: tracks are not trimmed")
            self._can_punch = False
            await self._commit(key, state)

    async def _cancel_pump(self, key: Key) -> None:
        self._dirty.discard(key)
        task = self._pumps.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _forget(self, session_id: str) -> None:
        for key in [k for k in self._pumps if k[0] == session_id]:
            await self._cancel_pump(key)
        with self._lock:
            outputs = [sink for key, sink in self._outputs.items() if key[0] == session_id]
        for sink in outputs:
            await sink.release()  # its upload is aborted below with the prefix's
        task = self._manifests.pop(session_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        with self._lock:
            for key in [k for k in self._states if k[0] == session_id]:
                del self._states[key]
            for key in [k for k in self._durable if k[0] == session_id]:
                del self._durable[key]
            for key in [k for k in self._wake_at if k[0] == session_id]:
                del self._wake_at[key]
            self._finished -= {k for k in self._finished if k[0] == session_id}
        await self._shipper.store.delete_prefix(f"sessions/{session_id}/")

    def _ship_manifest(self, session_id: str) -> None:
        self._shipper.loop.call_soon_threadsafe(self._start_manifest, session_id)

    def _start_manifest(self, session_id: str) -> None:
        running = self._manifests.get(session_id)
        if running is not None and not running.done():
            running.cancel()  # a newer save supersedes it: send the newest
        self._manifests[session_id] = asyncio.get_running_loop().create_task(
            self._send_manifest(session_id)
        )

    async def _send_manifest(self, session_id: str) -> None:
        backoff = 0.2
        path = self._dir(session_id) / MANIFEST
        while True:
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                return  # deleted
            try:
                await self._shipper.store.put(manifest_key(session_id), data, "application/json")
                created = SessionRecord.model_validate_json(data).created_at_ms
                await self._shipper.store.put(  # the listing's copy (several replicas)
                    listing_key(session_id, created), data, "application/json"
                )
                return
            except ObjectStoreError as e:
                self._report(f"{session_id}/{MANIFEST}", _refused_message(e))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)


shipping_chunk = 1024 * 1024


def _log_failure(done: Future[None]) -> None:
    error = done.exception() if not done.cancelled() else None
    if error is not None:
        log.warning("s3 tier: cannot set the bucket's lifecycle rule: %s", error)


def _pread(path: Path, offset: int, length: int) -> io.BytesIO:
    """The bytes as a BytesIO read straight into its own buffer: a bytes body is wrapped in a
    BytesIO by botocore and copied by aiohttp to measure it (a bytearray is copied by the
    socket transport instead), so every part in flight was held twice; this one is not
    copied on its way out (hashed and sent in small chunks)."""
    data = io.BytesIO()
    if length:
        data.seek(length - 1)
        data.write(b"\0")  # sized once, exactly
        with open(path, "rb") as f, data.getbuffer() as view:
            got = os.preadv(f.fileno(), [view], offset)
        if got != length:
            raise OSError(errno.EIO, f"{path.name}: {got} of {length} bytes at {offset}")
        data.seek(0)
    return data


def _pread_fd(fd: int, offset: int, length: int) -> io.BytesIO:
    """`_pread` from an open descriptor."""
    data = io.BytesIO()
    if length:
        data.seek(length - 1)
        data.write(b"\0")
        with data.getbuffer() as view:
            got = os.preadv(fd, [view], offset)
        if got != length:
            raise OSError(errno.EIO, f"{got} of {length} bytes at {offset}")
        data.seek(0)
    return data


def _pread_bytes(fd: int, offset: int, length: int) -> bytes:
    return os.pread(fd, length, offset) if length > 0 else b""


def _save_json(path: Path, data: bytes) -> None:
    """Written whole and durably (temporary file, fsync, rename, directory fsync)."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


async def _blocking(fn: Callable[..., T], *args: Any) -> T:
    """In a worker thread that a cancelled caller still waits for: a descriptor is closed only
    once no thread reads or punches through it."""
    job = asyncio.get_running_loop().run_in_executor(None, fn, *args)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await job
        raise


async def _next(chunks: AsyncGenerator[bytes, None]) -> bytes:
    return await anext(chunks, b"")
