"""Delivery state and the retry schedule (pure: no clock, no randomness, no I/O of its own).

Each (event, endpoint) pair is a `Delivery`. An endpoint gets its events in outbox order:
the deliverer attempts an endpoint's oldest unsettled delivery and goes on only once it
settled, so a receiver that was down gets everything, in order, when it returns. A failed
attempt is retried after an exponential backoff with jitter until `retry_for` has passed
since the event (at least 24 h by default), then the delivery is given up (`failed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DeliveryState = Literal["pending", "delivered", "failed"]
MAX_ATTEMPTS_KEPT = 20  # the attempts a delivery remembers (the newest)


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float
    max_seconds: float
    retry_for_seconds: float

    def delay(self, failures: int, jitter: float) -> float:
        """Seconds before the next attempt after `failures` failed ones; `jitter` in [0, 1)
        spreads retries of many deliveries over the upper half of the backoff."""
        exponent = min(max(failures - 1, 0), 60)
        backoff = min(self.max_seconds, self.base_seconds * 2.0**exponent)
        return backoff * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


@dataclass
class Attempt:
    at_ms: int
    status: int | None
    """The HTTP status; None when no answer came (refused, timed out)."""
    error: str = ""


@dataclass
class Delivery:
    event_id: str
    event_type: str
    session_id: str
    endpoint: str
    seq: int
    created_ms: int
    state: DeliveryState = "pending"
    next_at_ms: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    attempt_count: int = 0

    @property
    def last_error(self) -> str:
        for attempt in reversed(self.attempts):
            if attempt.error:
                return attempt.error
        return ""

    def due(self, now_ms: int) -> bool:
        return self.state == "pending" and now_ms >= self.next_at_ms


def record_attempt(
    delivery: Delivery,
    policy: RetryPolicy,
    now_ms: int,
    status: int | None,
    error: str,
    jitter: float,
) -> Delivery:
    """`delivery` after one attempt: delivered on a 2xx answer; else retried later, or given
    up once `retry_for` has passed since the event."""
    ok = status is not None and 200 <= status < 300
    if not ok and not error:
        error = f"HTTP {status}"
    delivery.attempts.append(Attempt(now_ms, status, "" if ok else error[:500]))
    del delivery.attempts[:-MAX_ATTEMPTS_KEPT]
    delivery.attempt_count += 1
    if ok:
        delivery.state = "delivered"
        return delivery
    if now_ms - delivery.created_ms >= policy.retry_for_seconds * 1000:
        delivery.state = "failed"
        return delivery
    delivery.next_at_ms = now_ms + int(policy.delay(delivery.attempt_count, jitter) * 1000)
    return delivery


def next_due(deliveries: list[Delivery]) -> list[Delivery]:
    """Per endpoint, its oldest unsettled delivery (in `seq` order): the only one it may be
    sent now, so each endpoint sees events in order."""
    heads: dict[str, Delivery] = {}
    for delivery in sorted(deliveries, key=lambda d: d.seq):
        if delivery.state == "pending" and delivery.endpoint not in heads:
            heads[delivery.endpoint] = delivery
    return list(heads.values())


def settled_events(deliveries: list[Delivery]) -> list[str]:
    """Events every endpoint has settled (delivered or given up): the outbox may drop them."""
    open_: set[str] = set()
    seen: set[str] = set()
    for delivery in deliveries:
        seen.add(delivery.event_id)
        if delivery.state == "pending":
            open_.add(delivery.event_id)
    return sorted(seen - open_)
