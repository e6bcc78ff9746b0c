"""Async client for the storage service, used by ingest, api, the compiler and the operator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, cast

import grpc

from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.sessions import OUTPUT
from tapedeck.storage import errors
from tapedeck.storage.status import REASON_KEY, error_class
from tapedeck.storage.wire import encode_append, serialize_write

UPLOAD_CHUNK = 4 * 1024 * 1024
READ_AHEAD = 4  # chunks of a Read received before the consumer asks for them

# gRPC's own retry policy (a well-kept library beats a hand-written loop): unary calls are
# retried while storage restarts. Streams are resumed by their callers from committed sizes.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": "tapedeck.v1.Storage", "method": m}
                    for m in (
                        "CreateSession",
                        "GetSession",
                        "ListSessions",
                        "UpdateSession",
                        "DeleteSession",
                        "QueryWriteStatus",
                    )
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
                "waitForReady": True,
                "timeout": "10s",
            }
        ]
    }
)


class StorageError(errors.StorageError):
    """A storage call failed; `code` is the gRPC status, `reason` the storage's detail.

    Made with `of`, it is also the storage/errors.py class its status stands for, so callers
    catch `errors.NotFound` or `errors.Conflict` rather than match status codes."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "") -> None:
        super().__init__(message, reason)
        self.code = code

    @staticmethod
    def of(code: grpc.StatusCode, message: str, reason: str = "") -> StorageError:
        return _typed(error_class(code, reason))(code, message, reason)

    @staticmethod
    def from_rpc(err: grpc.aio.AioRpcError) -> StorageError:
        return StorageError.of(
            err.code(), err.details() or err.code().name, _reason(err.trailing_metadata())
        )


_TYPED: dict[str, type[StorageError]] = {}


def _typed(domain: type[errors.StorageError]) -> type[StorageError]:
    """`StorageError` and `domain` at once (e.g. `RpcNotFound`), made once per class."""
    typed = _TYPED.get(domain.__name__)
    if typed is None:
        made = type(f"Rpc{domain.__name__}", (StorageError, domain), {})
        typed = _TYPED.setdefault(domain.__name__, cast(type[StorageError], made))
    return typed


def _reason(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """Storage's detail for a status (`disk-full`, `session-too-large`) from trailing metadata."""
    for key, value in metadata or ():
        if key == REASON_KEY:
            return str(value)
    return ""


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


class TrackWriter:
    """One open Write stream. `committed` is what storage has durably; resend from there.

    Storage refuses a stream in-band (a response carrying `error`) and keeps reading until
    we let go, so the refusal's code, message and reason arrive as data, whatever we still had
    in flight. Only when the call ended some other way (storage gone) does the error come from
    the call's status.
    """

    def __init__(
        self, call: grpc.aio.StreamStreamCall[pb.WriteRequest | bytes, pb.WriteResponse]
    ) -> None:
        self._call = call
        self.committed = 0
        self.refusal: StorageError | None = None
        """Storage's in-band refusal, once one was read."""

    def _response(self, response: pb.WriteResponse) -> pb.WriteResponse:
        if response.HasField("error"):
            error = response.error
            self.refusal = StorageError.of(
                _STATUS_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.message, error.reason
            )
            raise self.refusal
        self.committed = response.committed_size
        return response

    async def _ended(self) -> StorageError:
        """The error for a stream that ended without (or before we read) a refusal."""
        if self.refusal is not None:
            return self.refusal
        code = await self._call.code()
        if code == grpc.StatusCode.OK:
            return StorageError.of(grpc.StatusCode.ABORTED, "storage ended the write stream")
        details = await self._call.details()
        return StorageError.of(
            code, details or code.name, _reason(await self._call.trailing_metadata())
        )

    async def _read(self) -> pb.WriteResponse:
        try:
            response = await self._call.read()
        except grpc.aio.AioRpcError:
            raise await self._ended() from None
        if response is grpc.aio.EOF:
            raise await self._ended()
        return self._response(response)

    async def open(self, first: pb.WriteRequest) -> int:
        try:
            await self._call.write(first)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            raise await self._ended() from None
        await self._read()
        return self.committed

    async def send(self, offset: int, data: bytes, finish: bool = False) -> None:
        if self.refusal is not None:
            raise self.refusal
        try:
            await self._call.write(encode_append(offset, data, finish))  # one copy of `data`
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError):
            raise await self._ended() from None  # the stream already ended

    async def acks(self) -> AsyncIterator[pb.WriteResponse]:
        """Durable sizes as storage reports them; ends after `finished`, raises on errors."""
        while True:
            response = await self._read()
            yield response
            if response.finished:
                return

    def cancel(self) -> None:
        self._call.cancel()


class StorageClient:
    def __init__(self, addr: str) -> None:
        self.addr = addr
        self._channel: grpc.aio.Channel | None = None
        self._stub_instance: pb_grpc.StorageStub | None = None
        self._write: (
            grpc.aio.StreamStreamMultiCallable[pb.WriteRequest | bytes, pb.WriteResponse] | None
        ) = None

    @property
    def _stub(self) -> pb_grpc.StorageStub:
        """Made on first use: a grpc.aio channel belongs to the event loop that creates it."""
        if self._stub_instance is None:
            self._channel = grpc.aio.insecure_channel(
                self.addr,
                options=[
                    ("grpc.service_config", _SERVICE_CONFIG),
                    ("grpc.enable_retries", 1),
                    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
                    ("grpc.max_send_message_length", 16 * 1024 * 1024),
                ],
            )
            self._stub_instance = pb_grpc.StorageStub(self._channel)
            # Write with appends encoded by us (storage/wire.py): one copy of each frame.
            self._write = self._channel.stream_stream(
                "/tapedeck.v1.Storage/Write",
                request_serializer=serialize_write,
                response_deserializer=pb.WriteResponse.FromString,
            )
        return self._stub_instance

    def _write_call(
        self,
    ) -> grpc.aio.StreamStreamCall[pb.WriteRequest | bytes, pb.WriteResponse]:
        if self._write is None:
            _ = self._stub  # the channel and its Write method, made together on first use
        assert self._write is not None
        return self._write(wait_for_ready=True)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub_instance = self._write = None

    async def _unary(self, method: str, request: object) -> object:
        try:
            return await getattr(self._stub, method)(request)
        except grpc.aio.AioRpcError as err:
            raise StorageError.from_rpc(err) from None

    async def create_session(
        self, session_id: str = "", ttl_seconds: int = 0, title: str = ""
    ) -> pb.Session:
        req = pb.CreateSessionRequest(session_id=session_id, ttl_seconds=ttl_seconds, title=title)
        result = await self._unary("CreateSession", req)
        assert isinstance(result, pb.Session)
        return result

    async def get_session(self, session_id: str) -> pb.Session:
        result = await self._unary("GetSession", pb.GetSessionRequest(session_id=session_id))
        assert isinstance(result, pb.Session)
        return result

    async def list_sessions(
        self,
        page_size: int = 0,
        page_token: str = "",
        states: Sequence[pb.SessionState.ValueType] | None = None,
        query: str = "",
    ) -> pb.ListSessionsResponse:
        req = pb.ListSessionsRequest(
            page_size=page_size, page_token=page_token, states=states or [], query=query
        )
        result = await self._unary("ListSessions", req)
        assert isinstance(result, pb.ListSessionsResponse)
        return result

    async def update_session(self, request: pb.UpdateSessionRequest) -> pb.Session:
        result = await self._unary("UpdateSession", request)
        assert isinstance(result, pb.Session)
        return result

    async def delete_session(self, session_id: str) -> None:
        await self._unary("DeleteSession", pb.DeleteSessionRequest(session_id=session_id))

    async def query_write_status(self, session_id: str, obj: str) -> pb.QueryWriteStatusResponse:
        req = pb.QueryWriteStatusRequest(session_id=session_id, object=obj)
        result = await self._unary("QueryWriteStatus", req)
        assert isinstance(result, pb.QueryWriteStatusResponse)
        return result

    async def open_writer(
        self,
        session_id: str,
        obj: str,
        mime_type: str = "",
        started_at: float = 0.0,
        compile_generation: int = 0,
    ) -> TrackWriter:
        writer = TrackWriter(self._write_call())
        try:
            await writer.open(
                pb.WriteRequest(
                    session_id=session_id,
                    object=obj,
                    mime_type=mime_type,
                    started_at=started_at,
                    compile_generation=compile_generation,
                )
            )
        except StorageError:
            writer.cancel()
            raise
        return writer

    async def read(
        self, session_id: str, obj: str, offset: int = 0, limit: int = 0
    ) -> AsyncIterator[bytes]:
        """The object's bytes in chunks. A few chunks are received ahead of the consumer, so
        storage keeps sending while the caller (an HTTP response, a file) takes the last one."""
        call = self._stub.Read(
            pb.ReadRequest(session_id=session_id, object=obj, read_offset=offset, read_limit=limit)
        )
        ahead: asyncio.Queue[bytes | StorageError | None] = asyncio.Queue(READ_AHEAD)

        async def receive() -> None:
            try:
                async for response in call:
                    await ahead.put(response.data)
                await ahead.put(None)
            except grpc.aio.AioRpcError as err:
                await ahead.put(StorageError.from_rpc(err))

        receiving = asyncio.create_task(receive())
        try:
            while (item := await ahead.get()) is not None:
                if isinstance(item, StorageError):
                    raise item
                yield item
        finally:
            receiving.cancel()
            call.cancel()

    async def download(self, session_id: str, obj: str, path: Path) -> int:
        """Copy an object to a local file (the compiler's scratch space)."""
        size = 0
        with open(path, "wb") as f:  # noqa: ASYNC230 -- local scratch file of the compiler
            async for chunk in self.read(session_id, obj):
                f.write(chunk)
                size += len(chunk)
        return size

    async def upload_output(
        self, session_id: str, path: Path, compile_generation: int, name: str = OUTPUT
    ) -> int:
        """Store the compiled MP4 (or the named output `name`: poster, storyboard, HLS part) of
        compile `compile_generation` (from `begin_compile`); storage publishes it atomically
        when the upload finishes, unless a newer compile began meanwhile
        (FAILED_PRECONDITION)."""
        writer = await self.open_writer(session_id, name, compile_generation=compile_generation)

        async def final_ack() -> int:
            async for ack in writer.acks():  # drained as we go so acks never block the stream
                if ack.finished:
                    return ack.committed_size
            raise StorageError.of(grpc.StatusCode.ABORTED, "output upload ended early")

        acks = asyncio.create_task(final_ack())
        try:
            offset = 0
            with open(path, "rb") as f:  # noqa: ASYNC230 -- local scratch file of the compiler
                while not acks.done() and (chunk := f.read(UPLOAD_CHUNK)):
                    await writer.send(offset, chunk)
                    offset += len(chunk)
            await writer.send(offset, b"", finish=True)
            return await acks
        finally:
            acks.cancel()
            writer.cancel()
