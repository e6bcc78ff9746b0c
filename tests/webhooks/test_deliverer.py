"""The deliverer's loop against a stand-in outbox and a sink (no servers): in order per
destination, retried after a failure, acknowledged only once every destination settled,
and never twice after the outbox hands an event back."""

from __future__ import annotations

import json

import grpc
import httpx

from tapedeck._proto import storage_pb2 as pb
from tapedeck.settings import Settings
from tapedeck.storage.records import now_ms
from tapedeck.webhooks.deliverer import Deliverer
from tapedeck.webhooks.events import Event


class FakeOutbox:
    """What `WebhookOutboxStub` answers, kept in a list."""

    def __init__(self, events: list[pb.OutboxEvent]) -> None:
        self.events = events
        self.acked: list[str] = []
        self.ack_fails = False

    async def ReadOutbox(
        self, request: pb.ReadOutboxRequest, timeout: float
    ) -> pb.ReadOutboxResponse:
        return pb.ReadOutboxResponse(events=self.events, pending=len(self.events))

    async def AckOutbox(self, request: pb.AckOutboxRequest, timeout: float) -> pb.AckOutboxResponse:
        if self.ack_fails:  # storage killed while acknowledging
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
            )
        self.acked += list(request.ids)
        self.events = [e for e in self.events if e.id not in request.ids]
        return pb.AckOutboxResponse(removed=len(request.ids))


def message(n: int) -> pb.OutboxEvent:
    return pb.OutboxEvent(
        id=f"msg_{n}",
        seq=n,
        type="session.created",
        session_id="abcdefgh-1",
        timestamp_ms=now_ms(),  # within the retry window
        data_json=json.dumps({"sessionId": "abcdefgh-1"}),
    )


async def test_a_failing_sink_holds_later_events_then_gets_all_in_order_once() -> None:
    seen: list[str] = []
    failing = [True]

    async def sink(event: Event) -> None:
        if failing[0]:
            raise RuntimeError("API server away")
        seen.append(event.id)

    settings = Settings(webhook_backoff_base="0s")  # type: ignore[arg-type]
    deliverer = Deliverer(settings, [], None, None, {"kube": sink})
    outbox = FakeOutbox([message(1), message(2), message(3)])
    async with httpx.AsyncClient() as http:
        await deliverer.round(outbox, http)  # type: ignore[arg-type]
        assert seen == [] and outbox.acked == []
        (head,) = [d for d in deliverer.snapshot() if d.attempt_count]
        assert head.event_id == "msg_1" and "API server away" in head.last_error
        failing[0] = False
        outbox.ack_fails = True
        await deliverer.round(outbox, http)  # type: ignore[arg-type]
        assert seen == ["msg_1", "msg_2", "msg_3"] and outbox.acked == []
        # The outbox hands the delivered events back: acknowledged, not delivered again.
        outbox.ack_fails = False
        await deliverer.round(outbox, http)  # type: ignore[arg-type]
        assert seen == ["msg_1", "msg_2", "msg_3"]
        assert outbox.acked == ["msg_1", "msg_2", "msg_3"] and not outbox.events
    states = [(d.event_id, d.state) for d in deliverer.snapshot()]
    assert sorted(states) == [
        ("msg_1", "delivered"),
        ("msg_2", "delivered"),
        ("msg_3", "delivered"),
    ]
