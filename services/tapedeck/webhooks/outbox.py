"""Storage's durable outbox of webhook events, kept on the volume beside the sessions.

    {data_dir}/.tapedeck-outbox/{seq:020d}.json   one event, written whole (temp, fsync,
                                                 rename, directory fsync)

An event is durable before the call that caused it answers, so a storage crash (SIGKILL, a
power cut) after that loses none; the deliverer acknowledges an event once every endpoint
has it (or gave up), which removes its file. The file name orders events (`seq`); the id
inside is the stable `webhook-id`. Every method blocks: the registry runs them in threads.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path

import grpc

from tapedeck import metrics
from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.durable import fsync_dir
from tapedeck.storage.threads import in_thread
from tapedeck.webhooks.events import Event

log = logging.getLogger(__name__)

OUTBOX_DIR = ".tapedeck-outbox"


class Outbox:
    def __init__(self, data_dir: Path, limit: int) -> None:
        self.root = data_dir / OUTBOX_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self._lock = threading.Lock()
        self._events: dict[str, Event] = {}
        self._paths: dict[str, Path] = {}
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a write a crash interrupted: never acknowledged
        for path in sorted(self.root.glob("*.json")):
            try:
                event = Event.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                log.warning("outbox: %s is not a whole event; leaving it alone", path.name)
                continue
            self._events[event.id] = event
            self._paths[event.id] = path
        self._seq = max((e.seq for e in self._events.values()), default=0)

    def _next_seq(self) -> int:
        # Microseconds since the epoch, kept increasing: later events sort after earlier ones
        # even after every file was acknowledged and storage restarted.
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    def append(self, events: list[Event]) -> None:
        """Makes `events` durable, in order (blocking)."""
        if not events:
            return
        with self._lock:
            for event in events:
                event.seq = self._next_seq()
                path = self.root / f"{event.seq:020d}.json"
                tmp = self.root / f".{path.name}.{secrets.token_hex(4)}.tmp"
                try:
                    with open(tmp, "wb") as f:
                        f.write(event.model_dump_json().encode())
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, path)
                except OSError:
                    tmp.unlink(missing_ok=True)
                    raise
                self._events[event.id] = event
                self._paths[event.id] = path
            fsync_dir(self.root)
            self._trim()

    def _trim(self) -> None:
        """An outbox nobody reads (no deliverer running) must not fill the volume: beyond
        `limit`, the oldest events go, with a warning."""
        excess = len(self._events) - self.limit
        if excess <= 0:
            return
        oldest = sorted(self._events.values(), key=lambda e: e.seq)[:excess]
        log.warning("outbox over %d events: dropping the %d oldest", self.limit, excess)
        self._remove([e.id for e in oldest])

    def pending(self, limit: int) -> list[Event]:
        """The oldest `limit` events not yet acknowledged, in order."""
        with self._lock:
            ordered = sorted(self._events.values(), key=lambda e: e.seq)
        return [e.model_copy() for e in ordered[: max(1, limit)]]

    def ack(self, ids: list[str]) -> int:
        """Removes the events (durably); unknown ids are ignored. How many were removed."""
        with self._lock:
            return self._remove(ids)

    def _remove(self, ids: list[str]) -> int:
        removed = 0
        for event_id in ids:
            path = self._paths.pop(event_id, None)
            if path is None:
                continue
            self._events.pop(event_id, None)
            path.unlink(missing_ok=True)
            removed += 1
        if removed:
            fsync_dir(self.root)
        return removed

    def __len__(self) -> int:
        return len(self._events)


class OutboxService(pb_grpc.WebhookOutboxServicer):  # type: ignore[misc]  # generated, untyped
    """The outbox over gRPC: the deliverer reads and acknowledges, in worker threads (a file
    per event; acknowledging fsyncs the directory)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    async def ReadOutbox(
        self, request: pb.ReadOutboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReadOutboxResponse:
        limit = min(max(request.limit, 1), 1000)
        events = self.outbox.pending(limit)
        return pb.ReadOutboxResponse(
            events=[
                pb.OutboxEvent(
                    id=e.id,
                    seq=e.seq,
                    type=e.type,
                    session_id=e.session_id,
                    timestamp_ms=e.timestamp_ms,
                    data_json=json.dumps(e.data),
                )
                for e in events
            ],
            pending=len(self.outbox),
        )

    async def AckOutbox(
        self, request: pb.AckOutboxRequest, context: grpc.aio.ServicerContext
    ) -> pb.AckOutboxResponse:
        ids = list(request.ids)[:1000]
        try:
            removed = await in_thread(self.outbox.ack, ids)
        except OSError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"outbox I/O error: {exc.strerror}")
        metrics.webhook_outbox_events.set(len(self.outbox))
        return pb.AckOutboxResponse(removed=removed)
