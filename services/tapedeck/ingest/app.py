"""WebSocket endpoints `/ws/{track}`: one connection, one gRPC Write stream to storage.

Two tasks per connection: `_receive` takes frames from the socket and hands them to storage,
`_acks` relays durable sizes back. `_receive` stops reading while more than
`max_inflight_bytes` are unacknowledged, so a slow disk slows the client (TCP backpressure)
instead of growing our memory; and, when `receive_pool_bytes` is set, every connection stops
reading while the process's receive pool (ingest/pool.py) is full, so hundreds of streams
falling behind together do not either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass, field

from fastapi import APIRouter, WebSocket
from starlette.types import Message
from starlette.websockets import WebSocketDisconnect, WebSocketState

from tapedeck import metrics, tokens
from tapedeck.drain import Drain
from tapedeck.guards import client_key, creation_limiter, origin_allowed
from tapedeck.ingest import protocol
from tapedeck.ingest.admission import DRAINING, admit, drained
from tapedeck.ingest.pool import ReceivePool
from tapedeck.ingest.protocol import Close, ProtocolError, StartMessage, TrackStream
from tapedeck.sessions import TRACKS, is_valid_session_id
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.client import StorageClient, StorageError, TrackWriter
from tapedeck.storage.replicas import ReplicatedStorage

log = logging.getLogger(__name__)

START_TIMEOUT = 30.0


def storage_close(err: StorageError) -> ProtocolError:
    """How a storage failure reaches the client."""
    match err:
        case errors.NotFound():
            return ProtocolError(Close.NOT_FOUND, "unknown-session", err.message)
        case errors.Superseded():
            return ProtocolError(Close.CONFLICT, "superseded", err.message)
        case errors.Conflict() if not isinstance(err, errors.AlreadyExists):
            return ProtocolError(Close.CONFLICT, "finished", err.message)
        case errors.SessionTooLarge():
            return ProtocolError(Close.TOO_LARGE, "session-too-large", err.message)
        case errors.TooManySessions():
            return ProtocolError(Close.RATE_LIMITED, "too-many-sessions", err.message)
        case errors.Exhausted():
            return ProtocolError(Close.UNAVAILABLE, "storage-full", err.message)
        case errors.InvalidArgument() | errors.OutOfRange():
            return ProtocolError(Close.BAD_MESSAGE, "rejected", err.message)
        case _:
            return ProtocolError(
                Close.UNAVAILABLE,
                "storage-unavailable",
                f"storage is unavailable ({err.code.name.lower()}); retry",
            )


SUPERSEDED = "a newer connection took over this track"


@dataclass(eq=False)  # compared (and hashed, in `Ingest.sockets`) by identity
class _Connection:
    ws: WebSocket
    track: str
    stream: TrackStream
    accepted: int
    """Order of acceptance: which of two connections to one track is the newer."""
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    arrivals: deque[tuple[int, float]] = field(default_factory=deque)
    closed: bool = False
    draining: asyncio.Task[bool] | None = None
    """Ends when a drain begins: one waiter for the connection, not one per message."""

    pooled: int = 0
    """Bytes of this connection in the receive pool: received, not yet acknowledged."""

    async def send(self, text: str) -> None:
        async with self.send_lock:
            if not self.closed:
                await self.ws.send_text(text)

    async def close(self, code: int, error: ProtocolError | None = None) -> None:
        async with self.send_lock:
            if self.closed:
                return
            self.closed = True
            metrics.ingest_closes.labels(str(code)).inc()
            with contextlib.suppress(Exception):
                if error is not None:
                    await self.ws.send_text(protocol.error(error.code, error.message))
                if self.ws.application_state != WebSocketState.DISCONNECTED:
                    await self.ws.close(code, error.message[:120] if error else None)


class Ingest:
    def __init__(
        self, storage: StorageClient, settings: Settings, secret: str, drain: Drain | None = None
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.secret = secret
        self.drain = drain or Drain(settings.drain_timeout.total_seconds())
        self.drain.on_drain(self.settled)
        self.active: dict[tuple[str, str], _Connection] = {}
        self.sockets: set[_Connection] = set()
        """Every accepted socket, streaming or not: what admission counts and a drain waits for."""
        self._empty = asyncio.Event()
        self._empty.set()
        self._accepted = itertools.count()
        # One takeover at a time per track, storage's open included: storage hands a track to
        # the Write stream that reaches it last, so an older connection must never get there
        # after a newer one.
        self._takeovers: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.creation = creation_limiter(settings.sessions_per_minute)
        self.pool = ReceivePool(settings.receive_pool_bytes)

    def router(self) -> APIRouter:
        router = APIRouter()
        router.add_api_websocket_route("/ws/{track}", self.media)
        return router

    async def media(self, ws: WebSocket, track: str) -> None:
        if not origin_allowed(
            ws.headers.get("origin"), ws.headers.get("host"), self.settings.allowed_origins
        ):
            metrics.ingest_closes.labels("403").inc()
            await ws.close(code=4403)  # before accept: the handshake is refused with HTTP 403
            return
        refusal = admit(
            draining=self.drain.draining,
            open_sockets=len(self.sockets),
            max_streams=self.settings.ingest_max_streams,
        )
        await ws.accept()
        conn = _Connection(
            ws, track, TrackStream(self.settings.max_frame_bytes), next(self._accepted)
        )
        if refusal is not None:  # before any frame is read
            await conn.close(refusal.close, refusal)
            return
        self.sockets.add(conn)
        self._empty.clear()
        metrics.ingest_active_streams.inc()
        writer: TrackWriter | None = None
        key: tuple[str, str] | None = None
        try:
            session_id, token = await self._authorize(
                ws, track, ws.query_params.get("session"), ws.query_params.get("token")
            )
            start = await self._await_start(conn)
            if session_id is None:  # only now: a socket that never starts leaves nothing
                session_id, token = await self._create_session()
            key = (session_id, track)
            writer = await self._take_over(key, conn, start)
            conn.stream.on_ready(writer.committed)
            await conn.send(protocol.ready(session_id, track, writer.committed, token))
            await self._pump(conn, writer)
        except ProtocolError as err:
            await conn.close(err.close, err)
        except WebSocketDisconnect:
            conn.closed = True
        except Exception:
            log.exception("ingest connection failed")
            await conn.close(
                Close.UNAVAILABLE,
                ProtocolError(
                    Close.UNAVAILABLE, "internal", "internal error; reconnect and resume"
                ),
            )
        finally:
            if conn.draining is not None:
                conn.draining.cancel()
            metrics.ingest_active_streams.dec()
            self.sockets.discard(conn)
            if not self.sockets:
                self._empty.set()

            self.pool.give_back(conn.pooled)
            conn.pooled = 0
            if writer is not None:
                writer.cancel()
            if key is not None and self.active.get(key) is conn:
                del self.active[key]

    async def _take_over(
        self, key: tuple[str, str], conn: _Connection, start: StartMessage
    ) -> TrackWriter:
        """Make `conn` the track's connection, closing an older one, and open its storage
        stream; refused when a newer connection already holds the track (an older socket
        whose `start` arrived late must not cut off the client's live one)."""
        lock = self._takeovers.setdefault(key, asyncio.Lock())
        async with lock:
            previous = self.active.get(key)
            if previous is not None and previous.accepted > conn.accepted:
                raise ProtocolError(Close.CONFLICT, "superseded", SUPERSEDED)
            self.active[key] = conn
            if previous is not None:
                await previous.close(
                    Close.CONFLICT, ProtocolError(Close.CONFLICT, "superseded", SUPERSEDED)
                )
            try:
                return await self.storage.open_writer(
                    key[0], key[1], start.mimeType, start.startedAt
                )
            except StorageError as err:
                raise storage_close(err) from None

    @staticmethod
    def client_address(ws: WebSocket) -> str:
        return client_key(ws.client.host if ws.client else "unknown")

    async def _authorize(
        self, ws: WebSocket, track: str, session_id: str | None, token: str | None
    ) -> tuple[str | None, str | None]:
        """Returns the session id (None: create one once `start` arrived), and the upload
        token. The creation budget is spent here, before `start`, so a client over it is
        refused at once (docs/decisions.md)."""
        if track not in TRACKS:
            raise ProtocolError(
                Close.NOT_FOUND,
                "unknown-track",
                f"unknown track {track[:40]!r}: expected {', '.join(TRACKS)}",
            )
        if session_id is None:
            client = self.client_address(ws)
            if not self.creation.allow(client):
                raise ProtocolError(
                    Close.RATE_LIMITED,
                    "rate-limited",
                    f"too many new sessions from {client}; retry in "
                    f"{self.creation.retry_after(client)} s",
                )
            return None, None
        if not is_valid_session_id(session_id):
            raise ProtocolError(
                Close.BAD_MESSAGE,
                "invalid-session-id",
                "session must be 8-63 characters of a-z, 0-9 and '-'",
            )
        replica = tokens.upload_replica(self.secret, session_id, token) if token else None
        if replica is None:
            raise ProtocolError(
                Close.BAD_TOKEN,
                "bad-token",
                "missing, invalid or expired upload token for this session",
            )
        if isinstance(self.storage, ReplicatedStorage):  # the owner, from the signed token
            self.storage.pin(session_id, replica)
        try:
            await self.storage.get_session(session_id)
        except StorageError as err:
            raise storage_close(err) from None
        return session_id, None

    async def _create_session(self) -> tuple[str, str]:
        """A new session and its upload token, for a socket that came without `?session=`."""
        try:
            session = await self.storage.create_session()
        except StorageError as err:
            raise storage_close(err) from None
        ttl = self.settings.upload_token_ttl.total_seconds()
        return session.id, tokens.upload_token(self.secret, session.id, ttl, session.replica)

    async def settled(self) -> None:
        """Returns once no socket is open (the drain's wait for ingest)."""
        await self._empty.wait()

    async def _receive_or_drain(self, conn: _Connection, within: float | None) -> Message | None:
        """The socket's next message; None once a drain began (a message that arrived is still
        returned); TimeoutError after `within` seconds of silence."""
        if conn.draining is None:
            conn.draining = asyncio.create_task(self.drain.started.wait())
        receiving = asyncio.ensure_future(conn.ws.receive())
        try:
            done, _ = await asyncio.wait(
                {receiving, conn.draining}, timeout=within, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            receiving.cancel()
        if receiving in done:
            return receiving.result()
        if conn.draining in done:
            return None
        raise TimeoutError

    async def _await_start(self, conn: _Connection) -> StartMessage:
        try:
            message = await self._receive_or_drain(conn, START_TIMEOUT)
        except TimeoutError:
            raise ProtocolError(
                Close.BAD_MESSAGE, "start-timeout", f"no start message within {START_TIMEOUT:.0f} s"
            ) from None
        if message is None or self.drain.draining:
            raise ProtocolError(Close.RESTART, "draining", DRAINING)
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        if message.get("bytes") is not None:
            conn.stream.on_frame(len(message["bytes"]))  # raises binary-before-start
        start = conn.stream.on_text(message.get("text") or "")
        if not isinstance(start, StartMessage):
            raise ProtocolError(
                Close.BAD_MESSAGE, "expected-start", "the first message must be start"
            )
        return start

    async def _pump(self, conn: _Connection, writer: TrackWriter) -> None:
        receiving = asyncio.create_task(self._receive(conn, writer))
        acking = asyncio.create_task(self._acks(conn, writer))
        try:
            done, _ = await asyncio.wait({receiving, acking}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
            await acking  # receiving ends at finish; acks end at finished
        finally:
            receiving.cancel()
            acking.cancel()

    async def _receive(self, conn: _Connection, writer: TrackWriter) -> None:
        stream = conn.stream
        limit = self.settings.max_inflight_bytes
        while True:
            await self.pool.room()
            message = await self._next_message(conn)
            if message is None:  # draining: what storage has, it acknowledges; then 1012
                async with conn.progress:
                    await conn.progress.wait_for(lambda: drained(inflight=stream.inflight))
                raise ProtocolError(Close.RESTART, "draining", DRAINING)
            if message["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(message.get("code", 1000))
            data = message.get("bytes")
            if data is not None:
                size = len(data)
                at = stream.on_frame(size)
                self.pool.take(size)
                conn.pooled += size
                metrics.ingest_bytes_received.labels(conn.track).inc(size)
                async with conn.progress:
                    await conn.progress.wait_for(
                        lambda: stream.inflight <= limit or stream.inflight == size  # noqa: B023
                    )
                conn.arrivals.append((stream.offset, time.perf_counter()))
                await self._send(writer, at, data)
                del message, data  # not held while the next frame is awaited (a second)
            else:
                stream.on_text(message.get("text") or "")  # only finish is valid here
                await self._send(writer, stream.offset, b"", finish=True)
                return

    async def _next_message(self, conn: _Connection) -> Message | None:
        """The socket's next message, None once a drain began; closes with 4408 a client that
        stays silent for `socket_idle_timeout` while nothing is owed to it
        (`TrackStream.silence_is_idle`). Time spent not reading (a full inflight window) never
        counts: only this wait does."""
        timeout = self.settings.socket_idle_timeout.total_seconds() or None
        while True:
            try:
                return await self._receive_or_drain(conn, timeout)
            except TimeoutError:
                if conn.stream.silence_is_idle(acks_stuck=conn.send_lock.locked()):
                    raise ProtocolError(
                        Close.IDLE,
                        "idle-timeout",
                        f"nothing received for {timeout:g} s; reconnect and resume",
                    ) from None

    async def _send(
        self, writer: TrackWriter, offset: int, data: bytes, finish: bool = False
    ) -> None:
        try:
            await writer.send(offset, data, finish)
        except StorageError as err:
            raise storage_close(err) from None

    async def _acks(self, conn: _Connection, writer: TrackWriter) -> None:
        stream = conn.stream
        try:
            async for response in writer.acks():
                before = stream.committed
                if stream.on_ack(response.committed_size):
                    durable = min(stream.committed - before, conn.pooled)
                    self.pool.give_back(durable)
                    conn.pooled -= durable
                    now = time.perf_counter()
                    while conn.arrivals and conn.arrivals[0][0] <= stream.committed:
                        metrics.ingest_ack_latency.observe(now - conn.arrivals.popleft()[1])
                    metrics.ingest_bytes_committed.labels(conn.track).inc(stream.committed - before)
                    async with conn.progress:
                        conn.progress.notify_all()
                    await conn.send(protocol.ack(stream.committed))
                if response.finished:
                    stream.on_finished()
                    await conn.send(protocol.finished(stream.committed))
                    await conn.close(Close.NORMAL)
                    return
        except StorageError as err:
            raise storage_close(err) from None
