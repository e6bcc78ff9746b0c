"""The pure parts of webhooks: which transitions are events, the retry schedule, and the
per-endpoint order (no servers)."""

from __future__ import annotations

import json

import pytest

from tapedeck.sessions import State
from tapedeck.storage.records import OutputRecord, SessionRecord, TrackRecord
from tapedeck.webhooks.events import gone_events, transition_events
from tapedeck.webhooks.policy import (
    Delivery,
    RetryPolicy,
    next_due,
    record_attempt,
    settled_events,
)

HOUR_MS = 3_600_000
DEFAULT = RetryPolicy(base_seconds=5, max_seconds=3600, retry_for_seconds=25 * 3600)


def record(**changes: object) -> SessionRecord:
    base = SessionRecord(id="abcdefgh-1", created_at_ms=1_000, expires_at_ms=10_000_000)
    return base.model_copy(update=changes, deep=True)


def types(before: SessionRecord | None, after: SessionRecord) -> list[str]:
    return [e.type for e in transition_events(before, after)]


def test_transitions_become_events() -> None:
    recording = record(tracks={"video": TrackRecord(name="video")})
    assert types(None, recording) == ["session.created"]
    recorded = recording.model_copy(update={"state": State.RECORDED})
    assert types(recording, recorded) == ["recording.finished"]
    # A compile request that finalizes and queues at once still finishes the recording.
    assert types(recording, recording.model_copy(update={"state": State.QUEUED})) == [
        "recording.finished"
    ]
    compiling = recorded.model_copy(
        update={"state": State.COMPILING, "compile_generation": 1, "compile_attempts": 1}
    )
    assert types(recorded, compiling) == ["compile.started"]
    assert types(compiling, compiling.model_copy(update={"progress": 0.5})) == []
    ready = compiling.model_copy(
        update={
            "state": State.READY,
            "output": OutputRecord(
                size=1234, duration_seconds=2.5, video_codec="h264", audio_codec="aac"
            ),
        }
    )
    (event,) = transition_events(compiling, ready)
    assert event.type == "compile.ready"
    assert event.data == {
        "sessionId": "abcdefgh-1",
        "state": "ready",
        "size": 1234,
        "durationSeconds": 2.5,
        "videoCodec": "h264",
        "audioCodec": "aac",
    }
    failed = compiling.model_copy(update={"state": State.FAILED, "error": "no video stream"})
    (event,) = transition_events(compiling, failed)
    assert (event.type, event.data["message"]) == ("compile.failed", "no video stream")
    # A retry after a failure starts a new compile: another compile.started.
    again = failed.model_copy(update={"state": State.COMPILING, "compile_generation": 2})
    assert types(failed, again) == ["compile.started"]


def test_a_delete_is_expired_once_the_ttl_passed() -> None:
    session = record(expires_at_ms=5_000)
    assert [e.type for e in gone_events(session, now=4_999)] == ["session.deleted"]
    assert [e.type for e in gone_events(session, now=5_000)] == ["session.expired"]
    # Already `expired` (its state change was the event): not said twice.
    expired = session.model_copy(update={"state": State.EXPIRED})
    assert types(session, expired) == ["session.expired"]
    assert gone_events(expired, now=5_000) == []


def test_event_ids_are_unique_and_the_body_is_the_specifications_shape() -> None:
    a, b = transition_events(None, record())[0], transition_events(None, record())[0]
    assert a.id != b.id and a.id.startswith("msg_")
    body = json.loads(a.body({"extra": 1}))
    assert body["type"] == "session.created"
    assert body["timestamp"].endswith("Z")
    assert body["data"]["sessionId"] == "abcdefgh-1" and body["data"]["extra"] == 1


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    policy = RetryPolicy(base_seconds=1, max_seconds=60, retry_for_seconds=3600)
    assert [policy.delay(n, 1.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.delay(3, 0.0) == 2.0  # half of 4
    assert policy.delay(1000, 0.5) == 45.0  # capped, no overflow


def delivery(endpoint: str = "http://r/", seq: int = 1, created: int = 0) -> Delivery:
    return Delivery(f"msg_{seq}", "session.created", "abcdefgh-1", endpoint, seq, created)


def test_a_2xx_delivers_anything_else_retries_later() -> None:
    d = delivery()
    record_attempt(d, DEFAULT, 1_000, 500, "", jitter=1.0)
    assert (d.state, d.next_at_ms, d.last_error) == ("pending", 6_000, "HTTP 500")
    record_attempt(d, DEFAULT, 6_000, None, "ConnectError: refused", jitter=1.0)
    assert (d.state, d.next_at_ms) == ("pending", 16_000)
    assert not d.due(15_999) and d.due(16_000)
    record_attempt(d, DEFAULT, 16_000, 204, "", jitter=1.0)
    assert d.state == "delivered" and d.attempt_count == 3
    assert d.last_error == "ConnectError: refused"


@pytest.mark.parametrize("jitter", [0.0, 0.5, 1.0])
def test_a_failing_receiver_is_retried_for_at_least_24_hours(jitter: float) -> None:
    d = delivery()
    now = 0
    while d.state == "pending":
        record_attempt(d, DEFAULT, now, 503, "", jitter)
        now = d.next_at_ms
    assert d.state == "failed"
    last = d.attempts[-1].at_ms
    assert last >= 24 * HOUR_MS, f"gave up after {last / HOUR_MS:.1f} h"
    assert d.attempt_count < 100  # backoff, not a busy loop


def test_each_endpoint_gets_its_oldest_unsettled_event_first() -> None:
    a1, a2 = delivery("http://a/", 1), delivery("http://a/", 2)
    b1, b2 = delivery("http://b/", 1), delivery("http://b/", 2)
    b1.state = "delivered"
    heads = next_due([a2, b2, a1, b1])
    assert {(d.endpoint, d.seq) for d in heads} == {("http://a/", 1), ("http://b/", 2)}


def test_an_event_leaves_the_outbox_once_every_endpoint_settled() -> None:
    a1, b1 = delivery("http://a/", 1), delivery("http://b/", 1)
    a1.state = "delivered"
    assert settled_events([a1, b1]) == []
    b1.state = "failed"
    assert settled_events([a1, b1]) == ["msg_1"]
