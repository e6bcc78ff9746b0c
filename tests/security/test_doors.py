"""Auth, signed URLs, Origin checks, CORS and limits, against real processes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import Stack, make_stack, wait_settled
from tapedeck.ingest.uploader import UploadRejected, upload_track

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(
        tmp_path_factory.mktemp("guarded"),
        api_token=TOKEN,
        allowed_origins="https://app.example",
        sessions_per_minute="5",
        max_open_sessions="1000",
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def authed(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.base_url, headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong", "Basic czNjcmV0", f"Bearer {TOKEN}x", TOKEN]
)
def test_api_needs_the_bearer_token(guarded: Stack, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions/abcdefgh-1234"),
        ("POST", "/api/compile-video/abcdefgh-1234"),
        ("DELETE", "/api/sessions/abcdefgh-1234"),
        ("GET", "/api/download/abcdefgh-1234"),
    ):
        response = httpx.request(method, guarded.base_url + path, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(guarded.base_url + "/healthz").status_code == 200  # probes stay open


async def test_signed_download_url_works_without_the_token(
    guarded: Stack, h264_webm: Path, tmp_path: Path
) -> None:
    with authed(guarded) as api:
        created = api.post("/api/sessions").json()
        await upload_track(
            guarded.ws_base,
            "video",
            h264_webm.read_bytes(),
            session_id=created["id"],
            token=created["uploadToken"],
            frame_bytes=64 * 1024,
        )
        assert api.post(f"/api/compile-video/{created['id']}").status_code == 202
        detail = wait_settled(api, created["id"])[-1]
        url = detail["downloadUrl"]
    assert "sig=" in url and "exp=" in url
    signed = httpx.get(guarded.base_url + url)
    assert signed.status_code == 200 and signed.content[4:8] == b"ftyp"
    forged = url.replace("sig=", "sig=x")
    assert httpx.get(guarded.base_url + forged).status_code == 401
    other_session = url.replace(created["id"], "abcdefgh-0000")
    assert httpx.get(guarded.base_url + other_session).status_code == 401
    expired = url.split("?")[0] + "?exp=1&sig=" + url.split("sig=")[1]
    assert httpx.get(guarded.base_url + expired).status_code == 401


async def test_websocket_origin_is_checked(guarded: Stack) -> None:
    with authed(guarded) as api:
        created = api.post("/api/sessions").json()
    url = f"{guarded.ws_base}/ws/video?session={created['id']}&token={created['uploadToken']}"
    for origin in ("https://evil.example", "null"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=origin):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
    for origin in ("https://app.example", f"http://127.0.0.1:{guarded.port}", None):
        async with connect(url, origin=origin) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "start", "mimeType": "video/webm", "startedAt": 1}))
            assert json.loads(await ws.recv())["type"] == "ready"


def test_cors_is_off_by_default(guarded: Stack) -> None:
    with authed(guarded) as api:
        response = api.get("/api/sessions", headers={"Origin": "https://app.example"})
        preflight = api.options(
            "/api/sessions",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in preflight.headers


async def test_session_creation_is_rate_limited(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, sessions_per_minute="3").start()
    try:
        with httpx.Client(base_url=stack.base_url) as api:
            codes = [api.post("/api/sessions").status_code for _ in range(3)]
            limited = api.post("/api/sessions")
        assert codes == [201, 201, 201]
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate-limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 61
        with pytest.raises(UploadRejected) as socket_limited:  # the same budget for sockets
            await upload_track(stack.ws_base, "audio", b"x", max_connections=1)
        assert socket_limited.value.code == 4429
        assert socket_limited.value.error and socket_limited.value.error["code"] == "rate-limited"
    finally:
        stack.stop()


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
async def test_rate_limit_trusts_forwarded_for_only_from_trusted_proxies(
    tmp_path: Path, trusted: str
) -> None:
    """Behind a trusted proxy each forwarded client has its own budget; anyone else's
    X-Forwarded-For is ignored, so a client cannot escape its budget by inventing one."""
    stack = make_stack(tmp_path, sessions_per_minute="2", trusted_proxies=trusted).start()
    try:
        with httpx.Client(base_url=stack.base_url) as api:

            def create(client: str) -> int:
                return api.post("/api/sessions", headers={"X-Forwarded-For": client}).status_code

            first = [create("203.0.113.1") for _ in range(3)]
            other = create("203.0.113.2")
        assert first == [201, 201, 429]
        assert other == (201 if trusted else 429)
        # A new session over a socket, as the third forwarded client: its own budget when
        # the proxy is trusted, the peer's spent one when not.
        url = f"{stack.ws_base}/ws/audio"
        async with connect(url, additional_headers={"X-Forwarded-For": "203.0.113.3"}) as ws:
            # A refused socket may be told and closed before our `start` goes out; the error
            # is still there to read.
            with contextlib.suppress(ConnectionClosed):
                await ws.send(
                    json.dumps({"type": "start", "mimeType": "audio/webm", "startedAt": 1})
                )
            reply = json.loads(await ws.recv())
        assert (reply.get("code") == "rate-limited") == (not trusted), reply
    finally:
        stack.stop()


def test_open_sessions_are_limited(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, max_open_sessions="2").start()
    try:
        with httpx.Client(base_url=stack.base_url) as api:
            first = api.post("/api/sessions").json()["id"]
            assert api.post("/api/sessions").status_code == 201
            refused = api.post("/api/sessions")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too-many-sessions"
            assert api.delete(f"/api/sessions/{first}").status_code == 204
            assert api.post("/api/sessions").status_code == 201
    finally:
        stack.stop()
