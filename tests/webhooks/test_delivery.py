"""Webhooks end to end (issue 19, done-when 1): real storage and web processes, a real HTTP
receiver verifying every request with the standardwebhooks library."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from receiver import Receiver, dumps
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from harness import Stack, free_port, make_stack, record_session, wait_for, wait_settled
from tapedeck._proto import storage_pb2 as pb
from tapedeck.storage.client import StorageClient
from tapedeck.webhooks.outbox import OUTBOX_DIR
from tapedeck.webhooks.secret import new_webhook_secret

FAST = {
    "webhook_backoff_base": "0.2s",
    "webhook_backoff_max": "1s",
    "webhook_poll_interval": "0.2s",
    "speculative_compiles": "0",
    "compile_max_attempts": "1",
}


def webhook_stack(tmp: Path, receiver: Receiver, **extra: str) -> Stack:
    return make_stack(
        tmp, webhook_url=receiver.url, webhook_secret=receiver.secret, **(FAST | extra)
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver(free_port(), new_webhook_secret()).start()
    try:
        yield running
    finally:
        running.stop()


def outbox_files(stack: Stack) -> list[Path]:
    return sorted((stack.data_dir / OUTBOX_DIR).glob("*.json"))


def wait_types(receiver: Receiver, session_id: str, expected: list[str], timeout: float = 120):
    try:
        wait_for(lambda: receiver.types(session_id) == expected, timeout, f"events {expected}")
    except TimeoutError:
        raise AssertionError(
            f"{session_id}: got {receiver.types(session_id)}, wanted {expected}"
        ) from None


def test_every_event_in_order_with_valid_signatures(
    tmp_path: Path, receiver: Receiver, h264_webm: Path, opus_webm: Path
) -> None:
    stack = webhook_stack(tmp_path, receiver).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            # A recording that compiles, is downloaded through the event's link, then deleted.
            good = asyncio.run(record_session(stack.ws_base, api, h264_webm, opus_webm))
            assert api.post(f"/api/compile-video/{good}").status_code == 202
            assert wait_settled(api, good)[-1]["state"] == "ready"
            wait_types(
                receiver,
                good,
                ["session.created", "recording.finished", "compile.started", "compile.ready"],
            )
            ready = receiver.delivered()[-1].data
            assert ready["size"] > 0 and ready["durationSeconds"] > 0
            assert ready["videoCodec"] == "h264" and ready["audioCodec"] == "aac"
            # Signed when delivered: works without the API's auth, and is the MP4.
            download = httpx.get(ready["downloadUrl"], timeout=30)
            assert download.status_code == 200 and len(download.content) == ready["size"]
            assert api.delete(f"/api/sessions/{good}").status_code == 204
            wait_types(receiver, good, [*receiver.types(good)[:4], "session.deleted"])

            # A recording whose compile fails: compile.failed carries the message.
            junk = tmp_path / "junk.webm"
            junk.write_bytes(b"not a webm at all" * 500)
            bad = asyncio.run(record_session(stack.ws_base, api, junk))
            assert api.post(f"/api/compile-video/{bad}").status_code == 202
            assert wait_settled(api, bad)[-1]["state"] == "failed"
            wait_types(
                receiver,
                bad,
                ["session.created", "recording.finished", "compile.started", "compile.failed"],
            )
            assert receiver.delivered()[-1].data["message"]

            # A session whose TTL passes: the sweeper's delete is session.expired.
            lapsing = api.post("/api/sessions").json()["id"]

            async def expire() -> None:
                async with StorageClient(stack.storage_addr) as storage:
                    await storage.update_session(
                        pb.UpdateSessionRequest(session_id=lapsing, expires_at_ms=1)
                    )

            asyncio.run(expire())
            wait_types(receiver, lapsing, ["session.created", "session.expired"])

            listed = api.get("/api/webhooks/deliveries").json()
            assert listed["deliveredBy"] == "web"
            delivered = [d for d in listed["items"] if d["state"] == "delivered"]
            assert len(delivered) == len(receiver.delivered())
            metrics = api.get("/metrics").text
        assert receiver.bad_signatures == 0
        assert len({r.id for r in receiver.delivered()}) == len(receiver.delivered())
        assert 'tapedeck_webhook_deliveries_total{outcome="delivered"}' in metrics
        print("events delivered:", len(receiver.delivered()))

        # A wrong signature check fails: another secret, a changed body, a changed id.
        sample = receiver.delivered()[0]
        Webhook(receiver.secret).verify(sample.body, sample.headers)
        for secret, body, headers in (
            (new_webhook_secret(), sample.body, sample.headers),
            (receiver.secret, sample.body + b" ", sample.headers),
            (receiver.secret, sample.body, {**sample.headers, "webhook-id": "msg_other"}),
        ):
            with pytest.raises(WebhookVerificationError):
                Webhook(secret).verify(body, headers)
    except BaseException:
        print(stack.logs(), dumps([(r.type, r.status) for r in receiver.got]))
        raise
    finally:
        stack.stop()


def test_storage_killed_before_delivery_still_delivers_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.answer = 503
    stack = webhook_stack(tmp_path, receiver).start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            session = api.post("/api/sessions").json()["id"]
        wait_for(lambda: len(receiver.got) >= 2, 60, "failed attempts")
        assert outbox_files(stack), "the event is in the outbox while undelivered"
        stack.storage.kill()  # SIGKILL, and the deliverer's memory with the web process
        stack.web.kill()
        attempted = {r.id for r in receiver.got}
        receiver.answer = 200
        stack.start()
        wait_types(receiver, session, ["session.created"])
        wait_for(lambda: not outbox_files(stack), 60, "the outbox acknowledged")
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            # Another event goes through after the acknowledgement: the deliverer has
            # passed the first one for good, so a duplicate would have been sent by now.
            api.delete(f"/api/sessions/{session}")
        wait_types(receiver, session, ["session.created", "session.deleted"])
        created = [r for r in receiver.delivered() if r.type == "session.created"]
        assert len(created) == 1 and {created[0].id} == attempted
        print(
            f"attempts before the kill: {len(receiver.got) - len(receiver.delivered())}, "
            f"delivered after it: {len(receiver.delivered())}"
        )
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


# Down for minutes, with the default backoff base (5 s) capped at 20 s so the test's wait after
# the return stays short; `attempts` refused before it comes back.
DOWN_SECONDS = 150


def test_a_receiver_down_for_minutes_gets_everything_in_order(tmp_path: Path) -> None:
    receiver = Receiver(free_port(), new_webhook_secret())  # not listening yet
    stack = webhook_stack(
        tmp_path, receiver, webhook_backoff_base="5s", webhook_backoff_max="20s"
    ).start()
    down_since = time.monotonic()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            made = [api.post("/api/sessions").json()["id"] for _ in range(3)]
            api.delete(f"/api/sessions/{made[1]}")

            refused = [0]

            def retried() -> bool:
                items = api.get("/api/webhooks/deliveries").json()["items"]
                refused[0] = sum(d["attemptCount"] for d in items)
                return any(d["attemptCount"] >= 3 and d["lastError"] for d in items)

            wait_for(retried, DOWN_SECONDS, "three refused attempts")
            listed = api.get("/api/webhooks/deliveries", params={"state": "pending"}).json()
            assert len(listed["items"]) == 4
            time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - down_since)))
            retried()
        receiver.start()
        wait_for(lambda: len(receiver.delivered()) >= 4, 60, "every event")
        got = [(r.type, r.data["sessionId"]) for r in receiver.delivered()]
        assert got == [
            ("session.created", made[0]),
            ("session.created", made[1]),
            ("session.created", made[2]),
            ("session.deleted", made[1]),
        ]
        wait_for(lambda: not outbox_files(stack), 60, "the outbox acknowledged")
        assert len(receiver.delivered()) == 4
        print(f"down {DOWN_SECONDS} s: {refused[0]} refused attempts, delivered when back: 4")
    except BaseException:
        print(stack.logs())
        raise
    finally:
        receiver.stop()
        stack.stop()


def test_a_receiver_that_hangs_never_slows_recording(
    tmp_path: Path, receiver: Receiver, h264_webm: Path, opus_webm: Path
) -> None:
    receiver.hold.clear()  # every request waits until the recording is over
    stack = webhook_stack(tmp_path, receiver, webhook_timeout="600s").start()
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            # First the deliverer gets stuck in the receiver, then the recording runs.
            first = api.post("/api/sessions").json()["id"]
            wait_for(lambda: receiver.entered >= 1, 60, "the deliverer in the receiver")
            session = asyncio.run(record_session(stack.ws_base, api, h264_webm, opus_webm))
            detail = api.get(f"/api/sessions/{session}").json()
            assert not receiver.got, "nothing delivered while the receiver hangs"
            assert detail["state"] == "recorded"
            assert all(t["bytes"] > 0 for t in detail["tracks"])
        receiver.hold.set()
        wait_types(receiver, first, ["session.created"])
        wait_types(receiver, session, ["session.created", "recording.finished"])
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
