"""Who may connect and how fast: the Host and Origin policies and the session-creation limit.

Pure policies (`host_allowed`, `origin_allowed`) and a thin wrapper over the `limits` library's
moving window, shared by the api (`POST /api/sessions`) and ingest (sessions created by a
socket) so one client has one budget per process.
"""

from __future__ import annotations

import ipaddress
import re
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


_PORT = re.compile(r"[0-9]*", re.ASCII)


def _host_name(host_header: str) -> str | None:
    """The host of a `Host` header without its port, lowercased; None when malformed."""
    if host_header.startswith("["):  # an IPv6 literal: [addr] or [addr]:port
        address, bracket, rest = host_header[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:]))):
            return None
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return None
        return f"[{address.lower()}]"
    name, colon, port = host_header.partition(":")
    if colon and not _PORT.fullmatch(port):
        return None  # a second colon, or a port that is not digits
    name = name.lower()
    return name[:-1] if name.endswith(".") else name  # `localhost.` is `localhost`


def _ip_literal(name: str) -> bool:
    if name.startswith("["):
        return True  # _host_name checked it
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def host_allowed(host_header: str | None, allowed: list[str]) -> bool:
    """DNS rebinding: a page on a name the attacker controls, re-pointed at 127.0.0.1, is
    same-origin with a local server, so only the `Host` header tells it apart.

    Always allowed: `localhost`, `*.localhost` (browsers resolve these to loopback
    themselves) and IP literals (rebinding needs a DNS name). Otherwise the name must be
    listed: exactly, under a `.domain` entry (the domain and its subdomains), or `*`.
    """
    name = _host_name(host_header) if host_header else None
    if not name:
        return False
    if "*" in allowed or name == "localhost" or name.endswith(".localhost"):
        return True
    if _ip_literal(name):
        return True
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("."):
            if name == entry[1:] or name.endswith(entry):
                return True
        elif entry and name == entry:
            return True
    return False


def client_key(host: str) -> str:
    """Whose creation budget a request spends: an IPv4 address, or an IPv6 client's /64.

    One home or host usually owns a whole /64, so keying by /128 would give one client 2^64
    budgets. IPv4-mapped addresses (dual-stack sockets) count as IPv4; a host that is not an
    address (a test client) is its own key.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((int(address) >> 64 << 64, 64))
        return str(network)
    return str(address)


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
