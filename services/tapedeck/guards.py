"""Who may connect and how fast: the WebSocket Origin policy and the session-creation limit.

Pure policy (`origin_allowed`) and a thin wrapper over the `limits` library's moving window,
shared by the api (`POST /api/sessions`) and ingest (sessions created by a socket) so one
client has one budget per process.
"""

from __future__ import annotations

import time
from functools import lru_cache
from urllib.parse import urlsplit

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


def origin_allowed(origin: str | None, host: str | None, allowed: list[str]) -> bool:
    """Browsers send `Origin` on every WebSocket handshake; other clients may send none.

    Same-origin pages are always allowed; other origins only when listed (`*` lists all). A
    missing Origin is not a browser, so cross-site WebSocket hijacking is not possible and
    the upload token alone decides.
    """
    if origin is None:
        return True
    if "*" in allowed or origin.rstrip("/") in {a.rstrip("/") for a in allowed}:
        return True
    parts = urlsplit(origin)
    return bool(host) and parts.scheme in ("http", "https") and parts.netloc == host


class CreationLimiter:
    """At most `per_minute` new sessions per client address in any 60 s window."""

    def __init__(self, per_minute: int) -> None:
        self.item = RateLimitItemPerMinute(max(1, per_minute))
        self.enabled = per_minute > 0
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def allow(self, client: str) -> bool:
        return not self.enabled or self._limiter.hit(self.item, "create", client)

    def retry_after(self, client: str) -> int:
        reset, _ = self._limiter.get_window_stats(self.item, "create", client)
        return max(1, int(reset - time.time()) + 1)


@lru_cache
def creation_limiter(per_minute: int) -> CreationLimiter:
    return CreationLimiter(per_minute)
