from __future__ import annotations

import pytest

from tapedeck.guards import CreationLimiter, origin_allowed


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "example.com", [], True),  # not a browser: the token decides
        ("https://example.com", "example.com", [], True),  # same origin
        ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),
        ("https://evil.example", "example.com", [], False),
        ("https://example.com.evil.example", "example.com", [], False),
        ("null", "example.com", [], False),  # sandboxed iframes, file:// pages
        ("https://app.example", "api.example", ["https://app.example"], True),
        ("https://app.example/", "api.example", ["https://app.example"], True),
        ("https://other.example", "api.example", ["https://app.example"], False),
        ("https://anything.example", "api.example", ["*"], True),
        ("ftp://example.com", "example.com", [], False),
    ],
)
def test_origin_policy(origin: str | None, host: str, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, host, allowed) is ok


def test_creation_limiter_counts_per_client() -> None:
    limiter = CreationLimiter(3)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")
    assert 1 <= limiter.retry_after("a") <= 61
    assert all(CreationLimiter(0).allow("a") for _ in range(100))
