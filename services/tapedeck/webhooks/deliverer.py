"""The one webhook deliverer of a deployment: reads storage's outbox, signs by the Standard
Webhooks specification and posts to every endpoint, retrying with backoff.

It runs in the web process in embedded mode and in the operator in a cluster
(`Settings.webhook_delivered_by`), never on the recording path: it is its own task with its
own HTTP client, and storage only appends to the outbox (a file) when a session changes, so a
receiver that is down, slow or answers 500 costs recording nothing.

At-least-once: an event leaves the outbox only once every endpoint answered 2xx (or its
retries ran out); a deliverer or storage that dies meanwhile finds it there again, with the
same `webhook-id`, and a receiver deduplicates by it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
from standardwebhooks import Webhook

from tapedeck import metrics, tokens
from tapedeck._proto import storage_pb2 as pb
from tapedeck._proto import storage_pb2_grpc as pb_grpc
from tapedeck.settings import Settings
from tapedeck.webhooks.events import Event
from tapedeck.webhooks.policy import Delivery, RetryPolicy, next_due, record_attempt, settled_events

log = logging.getLogger(__name__)

READ_BATCH = 500
HISTORY = 1000
DOWNLOAD_LINK_SECONDS = 24 * 3600
USER_AGENT = "Tapedeck-Webhooks/1"


def event_of(message: pb.OutboxEvent) -> Event:
    return Event.model_validate(
        {
            "id": message.id,
            "seq": message.seq,
            "type": message.type,
            "session_id": message.session_id,
            "timestamp_ms": message.timestamp_ms,
            "data": json.loads(message.data_json or "{}"),
        }
    )


def signed_headers(webhook: Webhook, event_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The specification's three headers for one attempt (signed at `at`)."""
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": webhook.sign(event_id, at, body.decode()),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


Sink = Callable[[Event], Awaitable[None]]
"""Another destination of every event besides the webhooks (the operator's Kubernetes
Events): it settles like an endpoint, in order, retried when it raises."""


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        endpoints: list[str],
        webhook_secret: str | None,
        link_secret: str | None,
        sinks: Mapping[str, Sink] | None = None,
    ) -> None:
        self.settings = settings
        self.sinks = dict(sinks or {})
        self.endpoints = [*endpoints, *self.sinks]
        self.policy = RetryPolicy(
            settings.webhook_backoff_base.total_seconds(),
            settings.webhook_backoff_max.total_seconds(),
            settings.webhook_retry_for.total_seconds(),
        )
        self.webhook = Webhook(webhook_secret) if webhook_secret else None
        self.link_secret = link_secret
        self.events: dict[str, Event] = {}
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self.history: deque[Delivery] = deque(maxlen=HISTORY)
        self.outbox_pending = 0
        self._unreadable: grpc.StatusCode | None = None

    # --- what the api shows ------------------------------------------------------------------

    def snapshot(self) -> list[Delivery]:
        """Unsettled deliveries, then settled ones, newest first."""
        current = sorted(self.deliveries.values(), key=lambda d: d.seq, reverse=True)
        return current + list(reversed(self.history))

    # --- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        timeout = self.settings.webhook_timeout.total_seconds()
        async with (
            grpc.aio.insecure_channel(self.settings.storage_addr) as channel,
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as http,
        ):
            stub = pb_grpc.WebhookOutboxStub(channel)
            log.info("webhooks: delivering to %d endpoint(s)", len(self.endpoints))
            while True:
                await self.round(stub, http)
                await asyncio.sleep(self._pause())

    async def round(self, stub: pb_grpc.WebhookOutboxStub, http: httpx.AsyncClient) -> None:
        """Read new events, attempt what is due, acknowledge what settled."""
        try:
            await self._read(stub)
            self._unreadable = None
        except grpc.aio.AioRpcError as err:
            if err.code() != self._unreadable:  # once per outage, not once per poll
                log.warning("webhooks: outbox unreadable (%s); retrying", err.code().name)
            self._unreadable = err.code()
        await asyncio.gather(*(self._endpoint_round(e, http) for e in self.endpoints))
        try:
            await self._ack(stub)
        except grpc.aio.AioRpcError as err:
            log.warning("webhooks: outbox ack failed (%s); retrying", err.code().name)
        metrics.webhook_pending.set(len(self.deliveries))

    def _pause(self) -> float:
        poll = self.settings.webhook_poll_interval.total_seconds()
        now = _now_ms()
        due = [d.next_at_ms for d in next_due(list(self.deliveries.values()))]
        if not due:
            return poll
        return max(0.01, min(poll, (min(due) - now) / 1000))

    async def _read(self, stub: pb_grpc.WebhookOutboxStub) -> None:
        reply = await stub.ReadOutbox(pb.ReadOutboxRequest(limit=READ_BATCH), timeout=10)
        self.outbox_pending = reply.pending
        for message in reply.events:
            if message.id in self.events:
                continue  # known: delivered or retrying (a storage restart re-reads it)
            try:
                event = event_of(message)
            except ValueError as err:
                log.error("webhooks: outbox event %s unreadable (%s)", message.id, err)
                continue
            self.events[event.id] = event
            for endpoint in self.endpoints:
                self.deliveries[(event.id, endpoint)] = Delivery(
                    event.id, event.type, event.session_id, endpoint, event.seq, event.timestamp_ms
                )

    async def _endpoint_round(self, endpoint: str, http: httpx.AsyncClient) -> None:
        """This endpoint's due deliveries, oldest first, until one fails (order kept)."""
        while True:
            mine = [d for d in self.deliveries.values() if d.endpoint == endpoint]
            heads = next_due(mine)
            if not heads or not heads[0].due(_now_ms()):
                return
            head = heads[0]
            await self._attempt(head, http)
            if head.state == "pending":
                return

    async def _attempt(self, delivery: Delivery, http: httpx.AsyncClient) -> None:
        event = self.events[delivery.event_id]
        sink = self.sinks.get(delivery.endpoint)
        if sink is not None:
            status, error = await self._sink(sink, event)
        else:
            status, error = await self._post(delivery.endpoint, event, http)
        record_attempt(delivery, self.policy, _now_ms(), status, error, random.random())
        if delivery.state == "delivered":
            metrics.webhook_deliveries.labels("delivered").inc()
        else:
            metrics.webhook_failed_attempts.inc()
            if delivery.state == "failed":
                metrics.webhook_deliveries.labels("failed").inc()
                log.error(
                    "webhooks: gave up %s to %s after %d attempts: %s",
                    event.id,
                    delivery.endpoint,
                    delivery.attempt_count,
                    delivery.last_error,
                )

    @staticmethod
    async def _sink(sink: Sink, event: Event) -> tuple[int | None, str]:
        try:
            await sink(event)
        except Exception as err:  # any failure of a sink is retried like a receiver's
            return None, f"{type(err).__name__}: {err}"[:500]
        return 200, ""

    async def _post(
        self, endpoint: str, event: Event, http: httpx.AsyncClient
    ) -> tuple[int | None, str]:
        if self.webhook is None:
            return None, "no webhook secret"
        body = event.body(self._extra(event))
        headers = signed_headers(self.webhook, event.id, body, datetime.now(UTC))
        try:
            response = await http.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as err:
            return None, f"{type(err).__name__}: {err}"[:500]
        status = response.status_code
        if not 200 <= status < 300:
            return status, f"HTTP {status}: {response.text[:200]}"
        return status, ""

    def _extra(self, event: Event) -> dict[str, Any]:
        """What is computed per attempt: `compile.ready`'s download link, signed now so that a
        retry a day later still carries a working one."""
        if event.type != "compile.ready" or not self.link_secret:
            return {}
        expires = int(time.time()) + DOWNLOAD_LINK_SECONDS
        exp, _, sig = tokens.sign(
            self.link_secret, tokens.DOWNLOAD, event.session_id, expires
        ).partition(".")
        base = self.settings.public_base()
        return {
            "downloadUrl": f"{base}/api/download/{event.session_id}?exp={exp}&sig={sig}",
            "downloadUrlExpiresAt": datetime.fromtimestamp(expires, UTC)
            .isoformat()
            .replace("+00:00", "Z"),
        }

    async def _ack(self, stub: pb_grpc.WebhookOutboxStub) -> None:
        done = settled_events(list(self.deliveries.values()))
        if not done:
            return
        await stub.AckOutbox(pb.AckOutboxRequest(ids=done), timeout=10)
        for event_id in done:
            self.events.pop(event_id, None)
            for endpoint in self.endpoints:
                delivery = self.deliveries.pop((event_id, endpoint), None)
                if delivery is not None:
                    self.history.append(delivery)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def run_deliverer(deliverer: Deliverer) -> None:
    """Runs until cancelled; an unexpected error restarts the loop rather than ending
    deliveries for the process's lifetime."""
    while True:
        try:
            await deliverer.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhooks: deliverer failed; restarting in 5 s")
            await asyncio.sleep(5)
