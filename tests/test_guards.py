from __future__ import annotations

import pytest

from tapedeck.guards import CreationLimiter, host_allowed, origin_allowed


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


@pytest.mark.parametrize(
    ("host", "allowed", "ok"),
    [
        # Loopback names and IP literals: a rebound DNS name can never produce these.
        ("localhost", [], True),
        ("localhost:8000", [], True),
        ("LocalHost:8000", [], True),
        ("app.localhost:3000", [], True),
        ("localhost.:8000", [], True),
        ("127.0.0.1:8000", [], True),
        ("127.0.0.1", [], True),
        ("10.1.2.3:8000", [], True),  # a pod IP (kubelet probes, Prometheus)
        ("[::1]:8000", [], True),
        ("[::1]", [], True),
        ("[fe80::1]:80", [], True),
        # Any other name only when listed.
        ("evil.example:8000", [], False),
        ("evil.example", [], False),
        ("localhost.evil.example", [], False),
        ("evillocalhost", [], False),
        ("127.0.0.1.evil.example", [], False),
        ("tapedeck.example:443", ["tapedeck.example"], True),
        ("TAPEDECK.example", ["tapedeck.example"], True),
        ("tapedeck.example", ["Tapedeck.Example"], True),
        ("cam.tapedeck.example", ["tapedeck.example"], False),
        ("eviltapedeck.example", ["tapedeck.example"], False),
        ("corp.example", [".corp.example"], True),  # Django's leading dot: domain + subdomains
        ("cam.corp.example:8000", [".corp.example"], True),
        ("a.b.corp.example", [".corp.example"], True),
        ("evilcorp.example", [".corp.example"], False),
        ("corp.example.evil", [".corp.example"], False),
        ("anything.example:1", ["*"], True),
        ("tapedeck-api", ["tapedeck-api", "tapedeck-api.ns.svc"], True),
        # Malformed or missing: refused.
        (None, ["*"], False),
        ("", ["*"], False),
        (":8000", ["*"], False),
        ("::1", [], False),  # an IPv6 literal must be bracketed
        ("[::1", [], False),
        ("[evil.example]:80", ["evil.example"], False),
        ("localhost:80x", [], False),
        ("localhost:8000:1", [], False),
        ("localhost:²", [], False),
        ("[::1]x", [], False),
        ("127.1", [], False),  # not a dotted quad: a name, and not listed
    ],
)
def test_host_policy(host: str | None, allowed: list[str], ok: bool) -> None:
    assert host_allowed(host, allowed) is ok
