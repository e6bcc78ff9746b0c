"""The storage gRPC service (`grpc.aio`): session manifests and offset-checked, fsynced appends.

A Write stream is served by two tasks: a reader that pulls requests off the wire into a small
bounded queue, and the handler that drains whatever is queued, writes it, fsyncs once and acks
once (group commit per stream). The queue bound is what keeps memory flat under a slow disk:
when it is full the reader stops reading and HTTP/2 flow control pushes back on the sender.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tapedeck import metrics
from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.lifecycle import check_expiry, check_ttl
from tapedeck.sessions import OBJECTS, OUTPUT, TRACKS, State, is_valid_session_id, new_session_id
from tapedeck.settings import Settings
from tapedeck.storage.backend import Appender, Backend, LocalBackend, OutputWriter
from tapedeck.storage.records import (
    PB_TO_STATE,
    OutputRecord,
    SessionRecord,
    TrackRecord,
    now_ms,
    to_pb,
)

log = logging.getLogger(__name__)

QUEUE_DEPTH = 8
IO_THREADS = 64
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
REASON_KEY = "tapedeck-reason"


class _Stop:
    """Put into a stream's queue to end it: superseded by a newer writer, or session deleted."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code, self.message = code, message


@dataclass
class _Lease:
    """The one Write stream allowed to append to an object."""

    queue: asyncio.Queue[pb.WriteRequest | _Stop | None]
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopped: _Stop | None = None

    def stop(self, code: grpc.StatusCode, message: str) -> None:
        self.stopped = _Stop(code, message)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(self.stopped)


class StorageService(pb_grpc.StorageServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.records: dict[str, SessionRecord] = {r.id: r for r in backend.load_all()}
        self.sizes: dict[tuple[str, str], int] = {}
        for record in self.records.values():
            for track in record.tracks:
                self.sizes[(record.id, track)] = backend.size(record.id, track)
        self.leases: dict[tuple[str, str], _Lease] = {}
        self._manifest_locks: dict[str, asyncio.Lock] = {}
        metrics.storage_sessions.set(len(self.records))

    # --- helpers ---------------------------------------------------------------------------

    async def _abort(
        self,
        context: grpc.aio.ServicerContext,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
    ) -> NoReturn:
        if reason:
            context.set_trailing_metadata(((REASON_KEY, reason),))
        await context.abort(code, message)
        raise AssertionError("unreachable")

    async def _record(self, session_id: str, context: grpc.aio.ServicerContext) -> SessionRecord:
        if not is_valid_session_id(session_id):
            await self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid session id {session_id[:80]!r}"
            )
        record = self.records.get(session_id)
        if record is None:
            await self._abort(context, grpc.StatusCode.NOT_FOUND, f"session {session_id} not found")
        return record

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._manifest_locks.setdefault(session_id, asyncio.Lock())

    async def _save(self, record: SessionRecord) -> None:
        record.updated_at_ms = now_ms()
        await asyncio.to_thread(self.backend.save, record.model_copy(deep=True))

    def _pb(self, record: SessionRecord) -> pb.Session:
        sizes = {t: self.sizes.get((record.id, t), 0) for t in record.tracks}
        writing = any((record.id, t) in self.leases for t in TRACKS)
        return to_pb(record, sizes, writing)

    def _session_bytes(self, session_id: str) -> int:
        return sum(self.sizes.get((session_id, t), 0) for t in TRACKS)

    # --- sessions --------------------------------------------------------------------------

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        session_id = request.session_id or new_session_id()
        if not is_valid_session_id(session_id):
            await self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid session id {session_id[:80]!r}"
            )
        if request.ttl_seconds:
            try:
                check_ttl(request.ttl_seconds)
            except ValueError as err:
                await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
        async with self._lock(session_id):
            if session_id in self.records:
                await self._abort(
                    context, grpc.StatusCode.ALREADY_EXISTS, f"session {session_id} exists"
                )
            recording = sum(r.state == State.RECORDING for r in self.records.values())
            if recording >= self.settings.max_open_sessions:
                await self._abort(
                    context,
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
            try:
                await self._save(record)
            except OSError as exc:
                await self._disk_error(context, exc)
            self.records[session_id] = record
            metrics.storage_sessions.set(len(self.records))
            return self._pb(record)

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        return self._pb(await self._record(request.session_id, context))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size < 0:
            await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "page_size must be >= 0")
        size = min(size, MAX_PAGE_SIZE)
        after: tuple[int, str] | None = None
        if request.page_token:
            try:
                created, _, sid = (
                    base64.urlsafe_b64decode(request.page_token).decode().partition(":")
                )
                after = (int(created), sid)
            except ValueError:
                await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "malformed page token")
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

    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        record = await self._record(request.session_id, context)
        async with self._lock(record.id):
            # Re-read under the lock: a change that held it meanwhile must not be lost.
            record = await self._record(request.session_id, context)
            if request.if_state_in and record.state not in {
                PB_TO_STATE.get(s) for s in request.if_state_in
            }:
                await self._abort(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"session {record.id} is {record.state.value}",
                )
            updated = record.model_copy(deep=True)
            if request.HasField("state"):
                if request.state not in PB_TO_STATE:
                    await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "unknown state")
                updated.state = PB_TO_STATE[request.state]
            if request.HasField("progress"):
                updated.progress = min(1.0, max(0.0, request.progress))
            if request.HasField("error"):
                updated.error = request.error[-4000:]
            if request.HasField("expires_at_ms"):
                try:
                    check_expiry(request.expires_at_ms, record.created_at_ms)
                except ValueError as err:
                    await self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(err))
                updated.expires_at_ms = request.expires_at_ms
            if request.HasField("compile_attempts"):
                updated.compile_attempts = request.compile_attempts
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
            try:
                await self._save(updated)
            except OSError as exc:
                await self._disk_error(context, exc)
            self.records[record.id] = updated
            return self._pb(updated)

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        record = await self._record(request.session_id, context)
        async with self._lock(record.id):
            for obj in OBJECTS:
                lease = self.leases.get((record.id, obj))
                if lease is not None:
                    lease.stop(grpc.StatusCode.NOT_FOUND, f"session {record.id} was deleted")
                    async with lease.lock:
                        pass
            self.records.pop(record.id, None)
            for obj in TRACKS:
                self.sizes.pop((record.id, obj), None)
            await asyncio.to_thread(self.backend.delete, record.id)
            metrics.storage_sessions.set(len(self.records))
        self._manifest_locks.pop(record.id, None)
        return pb.DeleteSessionResponse()

    # --- bytes -----------------------------------------------------------------------------

    async def QueryWriteStatus(
        self, request: pb.QueryWriteStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryWriteStatusResponse:
        record = await self._record(request.session_id, context)
        obj = await self._object(request.object, context)
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

    async def _object(self, name: str, context: grpc.aio.ServicerContext) -> str:
        if name not in OBJECTS:
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unknown object {name[:40]!r}: expected one of {', '.join(OBJECTS)}",
            )
        return name

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadResponse]:
        record = await self._record(request.session_id, context)
        obj = await self._object(request.object, context)
        if request.read_offset < 0 or request.read_limit < 0:
            await self._abort(context, grpc.StatusCode.OUT_OF_RANGE, "negative offset or limit")
        if obj == OUTPUT:
            if record.output is None:
                await self._abort(context, grpc.StatusCode.NOT_FOUND, "no output yet")
            size = record.output.size
        else:
            if obj not in record.tracks:
                await self._abort(context, grpc.StatusCode.NOT_FOUND, f"no {obj} track")
            size = self.sizes.get((record.id, obj), 0)  # never expose bytes that are not durable
        if request.read_offset > size:
            await self._abort(
                context,
                grpc.StatusCode.OUT_OF_RANGE,
                f"read_offset {request.read_offset} beyond size {size}",
            )
        limit = size - request.read_offset
        if request.read_limit:
            limit = min(limit, request.read_limit)
        if limit == 0:
            return
        chunks = self.backend.read(record.id, obj, request.read_offset, limit)
        sentinel = b""
        # Read the next chunk while this one is on the wire: disk and network overlap.
        ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, sentinel))
        try:
            while True:
                try:
                    chunk = await ahead
                except FileNotFoundError:
                    await self._abort(context, grpc.StatusCode.NOT_FOUND, f"{obj} is gone")
                if not chunk:
                    return
                ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, sentinel))
                yield pb.ReadResponse(data=chunk)
        finally:
            if not ahead.done():
                ahead.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def Write(
        self, request_iterator: AsyncIterator[pb.WriteRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WriteResponse]:
        requests = aiter(request_iterator)
        try:
            first = await anext(requests)
        except StopAsyncIteration:
            return
        record = await self._record(first.session_id, context)
        obj = await self._object(first.object, context)
        key = (record.id, obj)
        async with self._lock(record.id):
            # Re-read under the lock: two tracks opening at once must both be recorded.
            record = await self._record(first.session_id, context)
            if obj != OUTPUT:
                await self._open_track(record, obj, first, context)
            old = self.leases.get(key)
            lease = _Lease(asyncio.Queue(QUEUE_DEPTH))
            self.leases[key] = lease
        if old is not None:
            old.stop(grpc.StatusCode.ABORTED, f"a newer writer took over {obj}")
            async with old.lock:  # let the old writer's batch in flight land first
                pass
        metrics.storage_active_writes.inc()
        reader: asyncio.Task[None] | None = None
        appender: Appender | None = None
        try:
            try:
                # Opened and closed on the loop (cheap metadata calls): a call cancelled while
                # the job waited for a worker thread would cancel a close, or lose an open
                # descriptor, and a deleted file's space returns only when its last one closes.
                appender = self._open_appender(record.id, obj)
            except OSError as exc:
                await self._disk_error(context, exc)
            yield pb.WriteResponse(committed_size=appender.size)
            reader = asyncio.create_task(self._read_into(requests, lease.queue))
            if first.data or first.finish_write:
                lease.queue.put_nowait(first)
            async for response in self._commit_loop(record.id, obj, lease, appender, context):
                yield response
        finally:
            metrics.storage_active_writes.dec()
            if reader is not None:
                reader.cancel()
            if self.leases.get(key) is lease:
                del self.leases[key]
            if appender is not None:
                appender.close()

    def _open_appender(self, session_id: str, obj: str) -> Appender:
        if obj == OUTPUT:
            return self.backend.open_output(session_id)
        return self.backend.open_track(session_id, obj)

    async def _open_track(
        self,
        record: SessionRecord,
        track: str,
        first: pb.WriteRequest,
        context: grpc.aio.ServicerContext,
    ) -> None:
        existing = record.tracks.get(track)
        if existing is not None and existing.finished:
            await self._abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{track} track of {record.id} is finished",
            )
        # A track that opens after the others finished (it raced them) reopens a `recorded`
        # session; once a compile was requested, the recording is closed for good.
        reopen = existing is None and record.state == State.RECORDED
        if record.state != State.RECORDING and not reopen:
            await self._abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"session {record.id} is {record.state.value}, not recording",
            )
        if existing is None or (first.mime_type and not existing.mime_type):
            updated = record.model_copy(deep=True)
            updated.state = State.RECORDING
            updated.tracks[track] = TrackRecord(
                name=track,
                mime_type=first.mime_type[:200],
                started_at=first.started_at,
                updated_at_ms=now_ms(),
            )
            try:
                await self._save(updated)
            except OSError as exc:
                await self._disk_error(context, exc)
            self.records[record.id] = updated
            self.sizes.setdefault((record.id, track), 0)

    @staticmethod
    async def _read_into(
        requests: AsyncIterator[pb.WriteRequest],
        queue: asyncio.Queue[pb.WriteRequest | _Stop | None],
    ) -> None:
        async for request in requests:
            await queue.put(request)
        await queue.put(None)

    async def _commit_loop(
        self,
        session_id: str,
        obj: str,
        lease: _Lease,
        appender: Appender,
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.WriteResponse]:
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
                    await self._abort(
                        context,
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
            del batch, item  # their bytes are in `chunks` now: hold each frame once
            if stop is not None or lease.stopped is not None:
                stop = stop or lease.stopped
                assert stop is not None
                await self._abort(context, stop.code, stop.message)
            if obj in TRACKS and chunks:
                total = self._session_bytes(session_id) + (offset - appender.size)
                if total > self.settings.max_session_bytes:
                    await self._abort(
                        context,
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"session would hold {total} bytes, over the limit of "
                        f"{self.settings.max_session_bytes}",
                        reason="session-too-large",
                    )
            if chunks or finish:
                async with lease.lock:
                    if lease.stopped is not None:
                        await self._abort(context, lease.stopped.code, lease.stopped.message)
                    await self._commit(session_id, obj, appender, chunks, context)
                if finish:
                    await self._finish(session_id, obj, appender, context)
                yield pb.WriteResponse(committed_size=appender.size, finished=finish)
            if finish or ended:
                return

    async def _commit(
        self,
        session_id: str,
        obj: str,
        appender: Appender,
        chunks: list[bytes],
        context: grpc.aio.ServicerContext,
    ) -> None:
        before = appender.size
        started = time.perf_counter()

        def write_and_sync() -> None:
            appender.append(chunks)
            chunks.clear()  # in the page cache now: free them before the (slow) fsync
            appender.sync()

        try:
            await asyncio.to_thread(write_and_sync)
        except OSError as exc:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(appender.rollback, before)
            await self._disk_error(context, exc)
        metrics.storage_fsync_seconds.observe(time.perf_counter() - started)
        metrics.storage_bytes_committed.labels(obj).inc(appender.size - before)
        if obj in TRACKS:
            self.sizes[(session_id, obj)] = appender.size
            record = self.records.get(session_id)
            if record is not None and obj in record.tracks:
                # In memory only (persisted with the next manifest save): idle finalization
                # needs a recent time, not a durable one.
                record.tracks[obj].updated_at_ms = now_ms()

    async def _finish(
        self, session_id: str, obj: str, appender: Appender, context: grpc.aio.ServicerContext
    ) -> None:
        async with self._lock(session_id):
            record = self.records.get(session_id)
            if record is None:
                await self._abort(context, grpc.StatusCode.NOT_FOUND, "session was deleted")
            updated = record.model_copy(deep=True)
            try:
                if obj == OUTPUT:
                    assert isinstance(appender, OutputWriter)
                    etag = await asyncio.to_thread(appender.publish)
                    updated.output = OutputRecord(size=appender.size, etag=etag)
                else:
                    updated.tracks[obj].finished = True
                    updated.tracks[obj].updated_at_ms = now_ms()
                    if updated.state == State.RECORDING and all(
                        t.finished for t in updated.tracks.values()
                    ):
                        updated.state = State.RECORDED
                await self._save(updated)
            except OSError as exc:
                await self._disk_error(context, exc)
            self.records[session_id] = updated

    async def _disk_error(self, context: grpc.aio.ServicerContext, exc: OSError) -> NoReturn:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            await self._abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "storage is full: no space left on the volume",
                reason="disk-full",
            )
        log.exception("storage I/O error")
        await self._abort(
            context, grpc.StatusCode.UNAVAILABLE, f"storage I/O error: {exc.strerror}"
        )


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
    service = StorageService(LocalBackend(settings.data_dir), settings)
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
