"""The storage gRPC service (`grpc.aio`): a thin adapter over the session registry.

Requests become registry calls (storage/registry.py: records, transitions, leases) and Write
streams feed the stream writer's commit loop (storage/writer.py); their errors
(storage/errors.py) become status codes in one place (`status.code_of`). A Write stream is
served by two tasks: a reader that pulls requests off the wire into the lease's bounded queue,
and the handler running the commit loop.

Refusals on a Write stream arrive in-band (`WriteResponse.error`): the stream keeps reading
until the client lets go, so the client learns the reason with public API only, whatever it
had in flight (docs/storage.md). Unary calls end with the status.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tapedeck import metrics
from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.placement import has_room
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.backend import Backend, close_backend, open_backend
from tapedeck.storage.records import PB_TO_STATE, OutputRecord, SessionRecord, to_pb
from tapedeck.storage.registry import (
    Append,
    Change,
    Opening,
    SessionRegistry,
    Stop,
    Stream,
    WriteQueue,
)
from tapedeck.storage.status import REASON_KEY, code_of
from tapedeck.storage.writer import QUEUE_BYTES, commit_loop
from tapedeck.webhooks.outbox import Outbox, OutboxService

log = logging.getLogger(__name__)

IO_THREADS = 64
DRAIN_SECONDS = 10.0  # how long a refused Write stream waits for its client to let go


async def abort(context: grpc.aio.ServicerContext, error: errors.StorageError) -> NoReturn:
    if error.reason:
        context.set_trailing_metadata(((REASON_KEY, error.reason),))
    await context.abort(code_of(error), error.message)
    raise AssertionError("unreachable")


def write_error(error: errors.StorageError) -> pb.WriteError:
    return pb.WriteError(code=code_of(error).value[0], message=error.message, reason=error.reason)


Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[["StorageService", Request, grpc.aio.ServicerContext], Awaitable[Response]]


def refusals(handler: Handler[Request, Response]) -> Handler[Request, Response]:
    """A unary handler's storage error becomes its status (reason in trailing metadata)."""

    @functools.wraps(handler)
    async def wrapper(
        self: StorageService, request: Request, context: grpc.aio.ServicerContext
    ) -> Response:
        try:
            return await handler(self, request, context)
        except errors.StorageError as error:
            await abort(context, error)

    return wrapper


def change_of(request: pb.UpdateSessionRequest) -> Change:
    """The registry's `Change` for an `UpdateSession` request."""
    state = None
    if request.HasField("state"):
        if request.state not in PB_TO_STATE:
            raise errors.InvalidArgument("unknown state")
        state = PB_TO_STATE[request.state]
    output = None
    if request.HasField("output"):
        output = OutputRecord(
            duration_seconds=request.output.duration_seconds,
            video_codec=request.output.video_codec,
            audio_codec=request.output.audio_codec,
        )
    given = request.HasField
    return Change(
        # Unknown states match no session: a condition of only those is never met.
        if_state_in=frozenset(PB_TO_STATE[s] for s in request.if_state_in if s in PB_TO_STATE)
        if request.if_state_in
        else None,
        if_compile_generation=request.if_compile_generation
        if given("if_compile_generation")
        else None,
        state=state,
        progress=request.progress if given("progress") else None,
        error=request.error if given("error") else None,
        expires_at_ms=request.expires_at_ms if given("expires_at_ms") else None,
        compile_attempts=request.compile_attempts if given("compile_attempts") else None,
        begin_compile=request.begin_compile,
        output=output,
        finish_tracks=request.finish_tracks,
        title=request.title if given("title") else None,
    )


class StorageService(pb_grpc.StorageServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, backend: Backend, settings: Settings) -> None:
        # The webhook outbox lives on the volume with the sessions, kept when webhooks are
        # configured (storage gets TAPEDECK_WEBHOOK_URL too) and in a cluster, where the
        # operator turns the events into Kubernetes Events.
        keep = bool(settings.webhook_url) or settings.mode == "cluster"
        self.outbox = Outbox(settings.data_dir, settings.webhook_outbox_max) if keep else None
        if self.outbox is not None:
            metrics.webhook_outbox_events.set(len(self.outbox))  # what a restart found
        self.registry = SessionRegistry(backend, settings, self.outbox)
        self.settings = settings

    def add_to(self, server: grpc.aio.Server) -> None:
        """Registers the Storage service, and the outbox's when there is one."""
        pb_grpc.add_StorageServicer_to_server(self, server)
        if self.outbox is not None:
            pb_grpc.add_WebhookOutboxServicer_to_server(OutboxService(self.outbox), server)

    def _pb(self, record: SessionRecord) -> pb.Session:
        registry = self.registry
        return to_pb(record, registry.track_sizes(record), bool(registry.writing(record.id)))

    # --- sessions --------------------------------------------------------------------------

    @refusals
    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        free, reserve = free_bytes(self.settings.data_dir), self.settings.storage_min_free_bytes
        if not has_room(free, reserve):
            raise errors.StorageFull(
                f"storage replica {self.settings.storage_replica} has {free:.0f} bytes free, "
                f"below its reserve of {reserve} (TAPEDECK_STORAGE_MIN_FREE_BYTES): "
                "no new sessions here"
            )
        return self._pb(
            await self.registry.create(request.session_id, request.ttl_seconds, request.title)
        )

    @refusals
    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        return self._pb(self.registry.get(request.session_id))

    @refusals
    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSessionsResponse:
        states = frozenset(PB_TO_STATE[s] for s in request.states if s in PB_TO_STATE)
        if len(request.query) > 200:
            raise errors.InvalidArgument("the query is longer than 200 characters")
        found, token = self.registry.page(
            request.page_size, request.page_token, states, request.query
        )
        return pb.ListSessionsResponse(sessions=[self._pb(r) for r in found], next_page_token=token)

    @refusals
    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.Session:
        return self._pb(await self.registry.update(request.session_id, change_of(request)))

    @refusals
    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteSessionResponse:
        await self.registry.delete(request.session_id)
        return pb.DeleteSessionResponse()

    # --- bytes -----------------------------------------------------------------------------

    @refusals
    async def QueryWriteStatus(
        self, request: pb.QueryWriteStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.QueryWriteStatusResponse:
        size, complete = self.registry.write_status(request.session_id, request.object)
        return pb.QueryWriteStatusResponse(committed_size=size, complete=complete)

    async def Read(
        self, request: pb.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadResponse]:
        sid, obj = request.session_id, request.object
        try:
            offset, limit = self.registry.read_range(
                sid, obj, request.read_offset, request.read_limit
            )
            if limit == 0:
                return
            chunks = self.registry.read(sid, obj, offset, limit)
        except errors.StorageError as error:
            await abort(context, error)
        sentinel = b""
        # Read the next chunk while this one is on the wire: disk and network overlap.
        ahead = asyncio.ensure_future(asyncio.to_thread(next, chunks, sentinel))
        try:
            while True:
                try:
                    chunk = await ahead
                except errors.NotFound:
                    await abort(context, errors.NotFound(f"{obj} is gone"))
                except errors.StorageError as error:
                    await abort(context, error)
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
        # Requests are read with `context.read()`, not `request_iterator`: gRPC's iterator
        # keeps the last parsed request (a whole frame) alive until the next one arrives.
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        assert isinstance(first, pb.WriteRequest)
        queue = WriteQueue(QUEUE_BYTES)
        reader: asyncio.Task[None] | None = None
        stream: Stream | None = None
        metrics.storage_active_writes.inc()
        try:
            try:
                stream = await self.registry.open_stream(
                    Opening(
                        first.session_id,
                        first.object,
                        first.mime_type,
                        first.started_at,
                        first.compile_generation,
                    ),
                    queue,
                )
                yield pb.WriteResponse(committed_size=stream.sink.size)
                reader = asyncio.create_task(self._read_into(context, queue))
                if first.data or first.finish_write:
                    queue.put_nowait(Append(first.write_offset, first.data, first.finish_write))
                async for ack in commit_loop(self.registry, stream):
                    yield pb.WriteResponse(committed_size=ack.committed_size, finished=ack.finished)
            except errors.StorageError as error:
                # In-band first, then the status once the client has nothing in flight.
                yield pb.WriteResponse(error=write_error(error))
                if reader is None:
                    reader = asyncio.create_task(self._read_into(context, queue))
                await self._drain(queue, reader)
                await abort(context, error)
        finally:
            metrics.storage_active_writes.dec()
            if reader is not None:
                reader.cancel()
            if stream is not None:
                self.registry.close_stream(stream)

    @staticmethod
    async def _read_into(context: grpc.aio.ServicerContext, queue: WriteQueue) -> None:
        while (request := await context.read()) is not grpc.aio.EOF:
            assert isinstance(request, pb.WriteRequest)
            # Each read of a bytes field is a copy: read it once, and hold the bytes alone,
            # not the parsed message too while the queue is full (memray: 94 of 322 MB in
            # protobuf's arenas at storage's peak with 300 streams).
            append = Append(request.write_offset, request.data, request.finish_write)
            del request
            await queue.put(append)
            del append  # not held while the next request is awaited
        await queue.put(None)

    @staticmethod
    async def _drain(queue: WriteQueue, reader: asyncio.Task[None]) -> None:
        """Discard what a refused client still sends until it half-closes, is taken over or
        deleted (a `Stop`), or DRAIN_SECONDS pass; a client that cancels ends the call."""
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
                    if item is None or isinstance(item, Stop):
                        return


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_frame_bytes + 64 * 1024),
        ("grpc.so_reuseport", 0),
    ]


def free_bytes(directory: Path) -> float:
    """Free space where recordings go, as a writer without root's reserve sees it."""
    try:
        return float(shutil.disk_usage(directory).free)
    except OSError:
        return float("nan")  # the volume is gone: no number rather than a wrong one


def watch_free_space(directory: Path, replica: int) -> None:
    """`tapedeck_storage_free_bytes{replica}`, computed when scraped (a statvfs, cheap)."""
    metrics.storage_free_bytes.labels(str(replica)).set_function(lambda: free_bytes(directory))


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
    service.add_to(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(settings.storage_addr)
    if port == 0:
        raise SystemExit(f"storage: cannot listen on {settings.storage_addr}")
    if settings.storage_metrics_port:
        from prometheus_client import start_http_server

        watch_free_space(settings.data_dir, settings.storage_replica)
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
