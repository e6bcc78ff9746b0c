"""One client, one session-creation budget: IPv6 clients are keyed by their /64."""

from __future__ import annotations

import contextlib
import json
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness import Stack, make_stack
from tapedeck.guards import client_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),  # one spelling per network
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # an IPv4 client on a dual-stack socket
        ("fe80::1%eth0", "fe80::/64"),
        ("unknown", "unknown"),  # no address (a test client, a Unix socket)
        ("", ""),
    ],
)
def test_client_key(host: str, key: str) -> None:
    assert client_key(host) == key


def test_one_slash_64_shares_one_budget_behind_a_trusted_proxy(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, sessions_per_minute="2", trusted_proxies="127.0.0.1").start()
    try:
        with httpx.Client(base_url=stack.base_url) as api:

            def create(client: str) -> httpx.Response:
                return api.post("/api/sessions", headers={"X-Forwarded-For": client})

            codes = [create(f"2001:db8:0:7::{n}").status_code for n in (1, 2, 3)]
            refused = create("2001:db8:0:7:ffff::9")
            neighbour = create("2001:db8:0:8::1")
        assert codes == [201, 201, 429]
        assert refused.status_code == 429 and "2001:db8:0:7::/64" in refused.text
        assert neighbour.status_code == 201  # the next /64 is someone else
    finally:
        stack.stop()


async def test_sockets_share_the_budget_of_their_slash_64(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, sessions_per_minute="1", trusted_proxies="127.0.0.1").start()
    try:
        with httpx.Client(base_url=stack.base_url) as api:
            first = api.post("/api/sessions", headers={"X-Forwarded-For": "2001:db8:5::1"})
        assert first.status_code == 201
        headers = {"X-Forwarded-For": "2001:db8:5::abcd"}
        async with connect(f"{stack.ws_base}/ws/audio", additional_headers=headers) as ws:
            with contextlib.suppress(ConnectionClosed):  # may be refused before start goes out
                await ws.send(
                    json.dumps({"type": "start", "mimeType": "audio/webm", "startedAt": 1})
                )
            reply = json.loads(await ws.recv())
        assert reply.get("code") == "rate-limited" and "2001:db8:5::/64" in reply["message"]
    finally:
        stack.stop()


class V6Stack(Stack):
    @property
    def base_url(self) -> str:
        return f"http://[::1]:{self.port}"


def test_ipv6_loopback_peer_is_keyed_by_its_slash_64(tmp_path: Path) -> None:
    """Over real IPv6 (no proxy): the peer `::1` spends the budget of `::/64`."""
    plain = make_stack(tmp_path, sessions_per_minute="1", host="::1")
    stack = V6Stack(**{f.name: getattr(plain, f.name) for f in fields(plain)}).start()
    try:
        with httpx.Client(base_url=stack.base_url) as api:
            assert api.post("/api/sessions").status_code == 201
            refused = api.post("/api/sessions")
        assert refused.status_code == 429 and "::/64" in refused.json()["error"]["message"]
    finally:
        stack.stop()
