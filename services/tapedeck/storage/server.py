"""The storage gRPC service (`grpc.aio`): session manifests and offset-checked, fsynced appends.

A Write stream is served by two tasks: a reader that pulls requests off the wire into a small
bounded queue, and the handler that drains whatever is queued, writes it, fsyncs once and acks
once (group commit per stream). The queue bound is what keeps memory flat under a slow disk:
when it is full the reader stops reading and HTTP/2 flow control pushes back on the sender.

Every refusal is a `Refusal`. Unary calls end with its status; a Write stream sends it in-band
(`WriteResponse.error`) and keeps reading until the client lets go, so the client learns the
reason with public API only, whatever it had in flight (docs/storage.md).

Blocking work (writes, fsyncs, manifest saves, deletes) runs through `threads.in_thread`: a
cancelled call waits for its thread before it closes a file or releases a lock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tapedeck import metrics
from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.lifecycle import check_expiry, check_ttl
from tapedeck.sessions import (
    OBJECTS,
    OUTPUT,
    TRACKS,
    State,
    is_valid_session_id,
    new_session_id,
    valid_started_at,
)
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.backend import Backend, OutputSink, TrackSink, close_backend, open_backend
from tapedeck.storage.records import (
    PB_TO_STATE,
    OutputRecord,
    SessionRecord,
    TrackRecord,
    now_ms,
    to_pb,
)
from tapedeck.storage.threads import finish_regardless, in_thread

log = logging.getLogger(__name__)

QUEUE_DEPTH = 8
IO_THREADS = 64
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
REASON_KEY = "tapedeck-reason"
DRAIN_SECONDS = 10.0  # how long a refused Write stream waits for its client to let go


class Refusal(Exception):
    """Storage says no: a gRPC status, a readable message and, for some, a reason
    (`disk-full`, `session-too-large`, `too-many-open-sessions`)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason

    async def abort(self, context: grpc.aio.ServicerContext) -> NoReturn:
        if self.reason:
            context.set_trailing_metadata(((REASON_KEY, self.reason),))
        await context.abort(self.code, self.message)
        raise AssertionError("unreachable")

    def write_error(self) -> pb.WriteError:
        return pb.WriteError(code=self.code.value[0], message=self.message, reason=self.reason)


def disk_refusal(exc: errors.StorageError | OSError) -> Refusal:
    """A backend's error as the status it is on the wire."""
    if isinstance(exc, OSError):  # a backend that let one through: the contract says it won't
        log.error("storage I/O error: %s", exc)
        return Refusal(grpc.StatusCode.UNAVAILABLE, f"storage I/O error: {exc.strerror or exc}")
    if isinstance(exc, errors.StorageFull):
        return Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message, reason=exc.reason)
    if isinstance(exc, errors.NotFound):
        return Refusal(grpc.StatusCode.NOT_FOUND, exc.message)
    if isinstance(exc, errors.InvalidArgument):
        return Refusal(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
    return Refusal(grpc.StatusCode.UNAVAILABLE, exc.message)


Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["StorageService", Request, grpc.aio.ServicerContext], Awaitable[Response]]


def refusals(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """A unary handler's `Refusal` becomes its status (with the reason in trailing metadata)."""

    @functools.wraps(handler)
    async def wrapper(
        self: StorageService, request: Request, context: grpc.aio.ServicerContext
    ) -> Response:
        try:
            return await handler(self, request, context)
        except Refusal as refusal:
            await refusal.abort(context)

    return wrapper


class _Stop:
    """Put into a stream's queue to end it: superseded by a newer writer, or session deleted."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code, self.message = code, message


QueueItem = pb.WriteRequest | _Stop | None


@dataclass
class _Lease:
    """The one Write stream allowed to append to an object."""

    queue: asyncio.Queue[QueueItem]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopped: _Stop | None = None

    def stop(self, code: grpc.StatusCode, message: str) -> None:
        self.stopped = _Stop(code, message)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(self.stopped)


@dataclass
class _Stream:
    """An open Write stream: what it writes, through which file, under which lease."""

    session_id: str
    obj: str
    lease: _Lease
    appender: TrackSink
    output: OutputSink | None = None  # the same sink, when it is the output
    generation: int = 0  # the output's compile generation


def _invalid_id(session_id: str) -> Refusal:
    return Refusal(grpc.StatusCode.INVALID_ARGUMENT, f"invalid session id {session_id[:80]!r}")


class StorageService(pb_grpc.StorageServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.records: dict[str, SessionRecord] = {r.id: r for r in backend.load_all()}
        self.sizes: dict[tuple[str, str], int] = {}
        started = now_ms()
        for record in self.records.values():
            for name, track in record.tracks.items():
                self.sizes[(record.id, name)] = backend.size(record.id, name)
                if record.state == State.RECORDING:
                    # A restart is not the client's silence: its idle time counts from now,
                    # so idle finalization never closes a recording whose client is only
                    # waiting to reconnect (the last write time is kept in memory only).
                    track.updated_at_ms = max(track.updated_at_ms, started)
        self.leases: dict[tuple[str, str], _Lease] = {}
        self._manifest_locks: dict[str, asyncio.Lock] = {}
        metrics.storage_sessions.set(len(self.records))

    # --- helpers ---------------------------------------------------------------------------

    def _record(self, session_id: str) -> SessionRecord:
        if not is_valid_session_id(session_id):
            raise _invalid_id(session_id)
        record = self.records.get(session_id)
        if record is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"session {session_id} not found")
        return record

    @staticmethod
    def _object(name: str) -> str:
        if name not in OBJECTS:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown object {name[:40]!r}: expected one of {', '.join(OBJECTS)}",
            )
        return name

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._manifest_locks.setdefault(session_id, asyncio.Lock())

    async def _save(self, record: SessionRecord) -> None:
        record.updated_at_ms = now_ms()
        try:
            await in_thread(self.backend.save, record.model_copy(deep=True))
        except (errors.StorageError, OSError) as exc:
            raise disk_refusal(exc) from None

    def _writing(self, session_id: str) -> list[str]:
        return [t for t in TRACKS if (session_id, t) in self.leases]

    def _pb(self, record: SessionRecord) -> pb.Session:
        sizes = {t: self.sizes.get((record.id, t), 0) for t in record.tracks}
        return to_pb(record, sizes, bool(self._writing(record.id)))

    def _session_bytes(self, session_id: str) -> int:
        return sum(self.sizes.get((session_id, t), 0) for t in TRACKS)

    # --- sessions --------------------------------------------------------------------------

    @refusals
    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        session_id = request.session_id or new_session_id()
        if not is_valid_session_id(session_id):
            raise _invalid_id(session_id)
        if request.ttl_seconds:
            try:
                check_ttl(request.ttl_seconds)
            except ValueError as err:
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
        async with self._lock(session_id):
            if session_id in self.records:
                raise Refusal(grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} exists")
            recording = sum(r.state == State.RECORDING for r in self.records.values())
            if recording >= self.settings.max_open_sessions:
                raise Refusal(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{recording} sessions are recording, the limit is "
                    f"{self.settings.max_open_sessions}; finish some first",
                    reason="too-many-open-sessions",
                )
            created = now_ms()
            ttl_ms = (request.ttl_seconds * 1000) or int(
                self.settings.session_ttl.total_seconds() * 1000
            )
            record = SessionRecord(
                id=session_id, created_at_ms=created, expires_at_ms=created + ttl_ms
            )
            await self._save(record)
            self.records[session_id] = record
            metrics.storage_sessions.set(len(self.records))
            return self._pb(record)

    @refusals
    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        return self._pb(self._record(request.session_id))

    @refusals
    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size < 0:
            raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "page_size must be >= 0")
        size = min(size, MAX_PAGE_SIZE)
        after: tuple[int, str] | None = None
        if request.page_token:
            try:
                created, _, sid = (
                    base64.urlsafe_b64decode(request.page_token).decode().partition(":")
                )
                after = (int(created), sid)
            except ValueError:
                raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "malformed page token") from None
        states = {PB_TO_STATE[s] for s in request.states if s in PB_TO_STATE}
        ordered = sorted(self.records.values(), key=lambda r: (r.created_at_ms, r.id), reverse=True)
        page: list[SessionRecord] = []
        more = False
        for record in ordered:
            if after is not None and (record.created_at_ms, record.id) >= after:
                continue
            if states and record.state not in states:
                continue
            if len(page) == size:
                more = True
                break
            page.append(record)
        token = ""
        if more and page:
            last = page[-1]
            token = base64.urlsafe_b64encode(f"{last.created_at_ms}:{last.id}".encode()).decode()
        return pb.ListSessionsResponse(sessions=[self._pb(r) for r in page], next_page_token=token)

    @refusals
    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        record = self._record(request.session_id)
        async with self._lock(record.id):
            # Re-read under the lock: a change that held it meanwhile must not be lost.
            record = self._record(request.session_id)
            if request.if_state_in and record.state not in {
                PB_TO_STATE.get(s) for s in request.if_state_in
            }:
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"session {record.id} is {record.state.value}",
                )
            if (
                request.HasField("if_compile_generation")
                and request.if_compile_generation != record.compile_generation
            ):
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"compile {request.if_compile_generation} of {record.id} was superseded "
                    f"by compile {record.compile_generation}",
                )
            updated = record.model_copy(deep=True)
            if request.HasField("state"):
                if request.state not in PB_TO_STATE:
                    raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "unknown state")
                updated.state = PB_TO_STATE[request.state]
            if request.HasField("progress"):
                updated.progress = min(1.0, max(0.0, request.progress))
            if request.HasField("error"):
                updated.error = request.error[-4000:]
            if request.HasField("expires_at_ms"):
                try:
                    check_expiry(request.expires_at_ms, record.created_at_ms)
                except ValueError as err:
                    raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
                updated.expires_at_ms = request.expires_at_ms
            if request.HasField("compile_attempts"):
                updated.compile_attempts = request.compile_attempts
            if request.begin_compile:
                updated.state = State.COMPILING
                updated.progress, updated.error = 0.0, ""
                # An earlier attempt's output is void: this compile publishes over its file,
                # and a crash between that rename and the next manifest save must not leave
                # the old size and etag describing the new bytes.
                updated.output = None
                updated.compile_attempts += 1
                updated.compile_generation += 1
            if request.HasField("output"):
                current = updated.output or OutputRecord()
                updated.output = current.model_copy(
                    update={
                        "duration_seconds": request.output.duration_seconds,
                        "video_codec": request.output.video_codec,
                        "audio_codec": request.output.audio_codec,
                    }
                )
            if request.finish_tracks:
                for track in updated.tracks.values():
                    track.finished = True
                if updated.state == State.RECORDING:
                    updated.state = State.RECORDED
            writing = self._writing(record.id)
            if record.state == State.RECORDING and updated.state != State.RECORDING and writing:
                # A writer that (re)connected after the caller looked would otherwise keep
                # getting acks for bytes no compile will read.
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"session {record.id} is being written ({', '.join(writing)})",
                )
            await self._save(updated)
            self.records[record.id] = updated
            return self._pb(updated)

    @refusals
    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        record = self._record(request.session_id)
        # Once begun, a delete runs to its end: a cancelled one must neither leave the files
        # of a session it already forgot nor forget a session whose files it left.
        await finish_regardless(self._delete(record.id))
        return pb.DeleteSessionResponse()

    async def _delete(self, session_id: str) -> None:
        async with self._lock(session_id):
            if session_id not in self.records:
                return  # a concurrent delete got here first
            for obj in OBJECTS:
                lease = self.leases.get((session_id, obj))
                if lease is not None:
                    lease.stop(grpc.StatusCode.NOT_FOUND, f"session {session_id} was deleted")
                    async with lease.lock:
                        pass
            try:
                await in_thread(self.backend.delete, session_id)  # files first, durably
            except (errors.StorageError, OSError) as exc:
                raise disk_refusal(exc) from None
            self.records.pop(session_id, None)
            for obj in TRACKS:
                self.sizes.pop((session_id, obj), None)
            metrics.storage_sessions.set(len(self.records))
        self._manifest_locks.pop(session_id, None)

    # --- bytes -----------------------------------------------------------------------------

    @refusals
    async def QueryWriteStatus(
        self, request: pb.QueryWriteStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryWriteStatusResponse:
        record = self._record(request.session_id)
        obj = self._object(request.object)
        if obj == OUTPUT:
            return pb.QueryWriteStatusResponse(
                committed_size=record.output.size if record.output else 0,
                complete=record.output is not None,
            )
        track = record.tracks.get(obj)
        return pb.QueryWriteStatusResponse(
            committed_size=self.sizes.get((record.id, obj), 0),
            complete=bool(track and track.finished),
        )

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadResponse]:
        try:
            session_id, obj, offset, limit = self._read_range(request)
        except Refusal as refusal:
            await refusal.abort(context)
        if limit == 0:
            return
        chunks = self.backend.read(session_id, obj, offset, limit)
        sentinel = b""
        # Read the next chunk while this one is on the wire: disk and network overlap.
        ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, sentinel))
        try:
            while True:
                try:
                    chunk = await ahead
                except (errors.NotFound, FileNotFoundError):
                    await context.abort(grpc.StatusCode.NOT_FOUND, f"{obj} is gone")
                except (errors.StorageError, OSError) as exc:
                    await disk_refusal(exc).abort(context)
                if not chunk:
                    return
                ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, sentinel))
                yield pb.ReadResponse(data=chunk)
        finally:
            if not ahead.done():
                ahead.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _read_range(self, request: pb.ReadRequest) -> tuple[str, str, int, int]:
        record = self._record(request.session_id)
        obj = self._object(request.object)
        if request.read_offset < 0 or request.read_limit < 0:
            raise Refusal(grpc.StatusCode.OUT_OF_RANGE, "negative offset or limit")
        if obj == OUTPUT:
            if record.output is None:
                raise Refusal(grpc.StatusCode.NOT_FOUND, "no output yet")
            size = record.output.size
        else:
            if obj not in record.tracks:
                raise Refusal(grpc.StatusCode.NOT_FOUND, f"no {obj} track")
            size = self.sizes.get((record.id, obj), 0)  # never expose bytes that are not durable
        if request.read_offset > size:
            raise Refusal(
                grpc.StatusCode.OUT_OF_RANGE,
                f"read_offset {request.read_offset} beyond size {size}",
            )
        limit = size - request.read_offset
        if request.read_limit:
            limit = min(limit, request.read_limit)
        return record.id, obj, request.read_offset, limit

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WriteResponse]:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        queue: asyncio.Queue[QueueItem] = asyncio.Queue(QUEUE_DEPTH)
        reader: asyncio.Task[None] | None = None
        stream: _Stream | None = None
        metrics.storage_active_writes.inc()
        try:
            try:
                stream = await self._open_stream(first, queue)
                yield pb.WriteResponse(committed_size=stream.appender.size)
                reader = asyncio.create_task(self._read_into(requests, queue))
                if first.data or first.finish_write:
                    queue.put_nowait(first)
                async for response in self._commit_loop(stream):
                    yield response
            except Refusal as refusal:
                # In-band first, then the status once the client has nothing in flight.
                yield pb.WriteResponse(error=refusal.write_error())
                if reader is None:
                    reader = asyncio.create_task(self._read_into(requests, queue))
                await self._drain(queue, reader)
                await refusal.abort(context)
        finally:
            metrics.storage_active_writes.dec()
            if reader is not None:
                reader.cancel()
            if stream is not None:
                key = (stream.session_id, stream.obj)
                if self.leases.get(key) is stream.lease:
                    del self.leases[key]
                # Safe: every thread job of this stream has ended (threads.in_thread), so
                # no write can follow the close into a reused descriptor.
                stream.appender.close()

    @staticmethod
    async def _drain(queue: asyncio.Queue[QueueItem], reader: asyncio.Task[None]) -> None:
        """Discard what a refused client still sends until it half-closes, is taken over or
        deleted (a `_Stop`), or DRAIN_SECONDS pass; a client that cancels ends the call."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while True:
                    getting = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getting, reader}, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getting not in done:
                        getting.cancel()
                        return  # the request stream ended without a half-close
                    item = getting.result()
                    if item is None or isinstance(item, _Stop):
                        return

    async def _open_stream(
        self, first: pb.WriteRequest, queue: asyncio.Queue[QueueItem]
    ) -> _Stream:
        record = self._record(first.session_id)
        obj = self._object(first.object)
        key = (record.id, obj)
        async with self._lock(record.id):
            # Re-read under the lock: two tracks opening at once must both be recorded.
            record = self._record(first.session_id)
            if obj == OUTPUT:
                self._check_output(record, first.compile_generation)
                new = True
            else:
                new = await self._open_track(record, obj, first)
            old = self.leases.get(key)
            lease = _Lease(queue)
            # Held (taken at once: it is new) until the file is open: a writer taking over
            # this one waits for it, and so for every older writer's batch in flight.
            await lease.lock.acquire()
            self.leases[key] = lease
        try:
            if old is not None:
                old.stop(grpc.StatusCode.ABORTED, f"a newer writer took over {obj}")
                async with old.lock:  # let the old writer's batch in flight land first
                    pass
            appender, output = await self._open_appender(record.id, obj, new)
        except BaseException as exc:
            if self.leases.get(key) is lease:
                del self.leases[key]
            if isinstance(exc, (errors.StorageError, OSError)):
                raise disk_refusal(exc) from None
            raise
        finally:
            lease.lock.release()
        if obj in TRACKS:
            self.sizes[key] = appender.size
        return _Stream(record.id, obj, lease, appender, output, first.compile_generation)

    async def _open_appender(
        self, session_id: str, obj: str, new: bool
    ) -> tuple[TrackSink, OutputSink | None]:
        """Opens in a worker thread (opening syncs: the file's unsynced bytes, or a new file's
        directory entry). A call cancelled meanwhile still gets the open to its end and closes
        the file, so no descriptor is lost (on a full volume, a deleted file's space returns
        only when its last descriptor closes)."""

        def open_appender() -> tuple[TrackSink, OutputSink | None]:
            if obj == OUTPUT:
                output = self.backend.open_output(session_id)
                return output, output
            return self.backend.open_track(session_id, obj, new=new), None

        opening = asyncio.get_running_loop().run_in_executor(None, open_appender)
        try:
            return await finish_regardless(opening)
        except asyncio.CancelledError:
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                opening.result()[0].close()
            raise

    @staticmethod
    def _check_output(record: SessionRecord, generation: int) -> None:
        """Only the compile that began last may write the output, and only while compiling:
        a late compile must never replace a published MP4."""
        if record.state != State.COMPILING or generation != record.compile_generation:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"output of compile {generation} refused: session {record.id} is "
                f"{record.state.value} at compile {record.compile_generation}",
            )

    def _check_track_open(self, session_id: str, track: str) -> None:
        """Bytes are acknowledged only while the track can still be compiled."""
        record = self.records.get(session_id)
        if record is None:
            raise Refusal(grpc.StatusCode.NOT_FOUND, f"session {session_id} was deleted")
        if record.state != State.RECORDING or record.tracks[track].finished:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{track} track of {session_id} is finished ({record.state.value})",
            )

    async def _open_track(self, record: SessionRecord, track: str, first: pb.WriteRequest) -> bool:
        """Records the track in the manifest; True when it is new (its file starts empty)."""
        existing = record.tracks.get(track)
        if existing is not None and existing.finished:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION, f"{track} track of {record.id} is finished"
            )
        # A track that opens after the others finished (it raced them) reopens a `recorded`
        # session; once a compile was requested, the recording is closed for good.
        reopen = existing is None and record.state == State.RECORDED
        if record.state != State.RECORDING and not reopen:
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {record.id} is {record.state.value}, not recording",
            )
        if existing is None or (first.mime_type and not existing.mime_type):
            if not valid_started_at(first.started_at):
                # A NaN would be saved as null, and a manifest that does not load hides the
                # whole session at the next start.
                raise Refusal(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"started_at {first.started_at!r} is not epoch milliseconds (or 0)",
                )
            updated = record.model_copy(deep=True)
            updated.state = State.RECORDING
            updated.tracks[track] = TrackRecord(
                name=track,
                mime_type=first.mime_type[:200],
                started_at=first.started_at,
                updated_at_ms=now_ms(),
            )
            await self._save(updated)
            self.records[record.id] = updated
        return existing is None

    @staticmethod
    async def _read_into(
        requests: AsyncIterator[pb.WriteRequest], queue: asyncio.Queue[QueueItem]
    ) -> None:
        async for request in requests:
            await queue.put(request)
        await queue.put(None)

    async def _commit_loop(self, stream: _Stream) -> AsyncIterator[pb.WriteResponse]:
        session_id, obj, lease, appender = (
            stream.session_id,
            stream.obj,
            stream.lease,
            stream.appender,
        )
        while True:
            batch = [await lease.queue.get()]
            while not lease.queue.empty() and len(batch) < QUEUE_DEPTH:
                batch.append(lease.queue.get_nowait())
            chunks: list[bytes] = []
            finish = ended = False
            stop: _Stop | None = None
            offset = appender.size
            for item in batch:
                if isinstance(item, _Stop):
                    stop = item
                    break
                if item is None:
                    ended = True
                    break
                if item.write_offset != offset:
                    raise Refusal(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"write_offset {item.write_offset} but {obj} has {offset} bytes committed"
                        + (
                            f" (+{offset - appender.size} pending)"
                            if offset != appender.size
                            else ""
                        ),
                    )
                data = item.data  # each read of a bytes field is a copy: read it once
                if data:
                    chunks.append(data)
                    offset += len(data)
                if item.finish_write:
                    finish = True
                    break
            del batch  # their bytes are in `chunks` now: hold each frame once
            stop = stop or lease.stopped
            if stop is not None:
                raise Refusal(stop.code, stop.message)
            if obj in TRACKS and chunks:
                total = self._session_bytes(session_id) + (offset - appender.size)
                if total > self.settings.max_session_bytes:
                    raise Refusal(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"session would hold {total} bytes, over the limit of "
                        f"{self.settings.max_session_bytes}",
                        reason="session-too-large",
                    )
            if chunks or finish:
                async with lease.lock:
                    if lease.stopped is not None:
                        raise Refusal(lease.stopped.code, lease.stopped.message)
                    if obj in TRACKS:
                        self._check_track_open(session_id, obj)
                    else:
                        self._check_output(self._record(session_id), stream.generation)
                    await self._commit(session_id, obj, appender, chunks)
                if finish:
                    await self._finish(stream)
                yield pb.WriteResponse(committed_size=appender.size, finished=finish)
            if finish or ended:
                return

    async def _commit(
        self, session_id: str, obj: str, appender: TrackSink, chunks: list[bytes]
    ) -> None:
        before = appender.size
        started = time.perf_counter()
        try:
            await in_thread(appender.append, chunks)  # durable (or cut back) when it returns
        except (errors.StorageError, OSError) as exc:
            raise disk_refusal(exc) from None
        metrics.storage_fsync_seconds.observe(time.perf_counter() - started)
        metrics.storage_bytes_committed.labels(obj).inc(appender.size - before)
        if obj in TRACKS:
            self.sizes[(session_id, obj)] = appender.size
            record = self.records.get(session_id)
            if record is not None and obj in record.tracks:
                # In memory only (persisted with the next manifest save): idle finalization
                # needs a recent time, not a durable one (a restart counts as a write).
                record.tracks[obj].updated_at_ms = now_ms()

    async def _finish(self, stream: _Stream) -> None:
        session_id, obj, appender = stream.session_id, stream.obj, stream.appender
        async with self._lock(session_id):
            record = self.records.get(session_id)
            if record is None:
                raise Refusal(grpc.StatusCode.NOT_FOUND, "session was deleted")
            updated = record.model_copy(deep=True)
            if obj == OUTPUT:
                self._check_output(record, stream.generation)
                assert stream.output is not None
                try:
                    etag = await in_thread(stream.output.publish)
                except (errors.StorageError, OSError) as exc:
                    raise disk_refusal(exc) from None
                updated.output = OutputRecord(size=appender.size, etag=etag)
            else:
                updated.tracks[obj].finished = True
                updated.tracks[obj].updated_at_ms = now_ms()
                if updated.state == State.RECORDING and all(
                    t.finished for t in updated.tracks.values()
                ):
                    updated.state = State.RECORDED
            await self._save(updated)
            self.records[session_id] = updated


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_frame_bytes + 64 * 1024),
        ("grpc.so_reuseport", 0),
    ]


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run the storage server until cancelled."""
    # Every stream's group commit waits in a thread for its fdatasync; with hundreds of
    # streams, the default pool (cores + 4 threads) makes them queue behind each other.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(IO_THREADS, thread_name_prefix="storage-io")
    )
    server = grpc.aio.server(options=server_options(settings))
    backend = open_backend(settings)
    service = StorageService(backend, settings)
    pb_grpc.add_StorageServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(settings.storage_addr)
    if port == 0:
        raise SystemExit(f"storage: cannot listen on {settings.storage_addr}")
    if settings.storage_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.storage_metrics_port, addr=settings.host)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    log.info("storage serving on %s, data in %s", settings.storage_addr, settings.data_dir)
    if ready is not None:
        ready.set()
    try:
        await server.wait_for_termination()
    finally:
        await server.stop(grace=2)
        close_backend(backend)
