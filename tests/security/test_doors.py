"""Auth, signed URLs, Origin checks, CORS and limits, against real processes."""

from __future__ import annotations

import contextlib
import json
import socket
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


# --- Host: a rebound DNS name must not reach a local server (DNS rebinding) ---------------

EVIL = "evil.example"


@pytest.fixture(scope="module")
def named(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The default server (no API token), with a UI and two names of its own."""
    tmp = tmp_path_factory.mktemp("named")
    ui = tmp / "ui"
    ui.mkdir()
    (ui / "index.html").write_text("<!doctype html><title>Tapedeck</title>")
    stack = make_stack(
        tmp,
        allowed_hosts="tapedeck.example, .corp.example",
        frontend_dir=str(ui),
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


async def ws_status(stack: Stack, host: str, path: str) -> int:
    """The handshake's HTTP status for `path` when the page's name is `host` (the socket
    still goes to 127.0.0.1, as a rebound name would)."""
    with socket.create_connection(("127.0.0.1", stack.port)) as sock:
        try:
            async with connect(
                f"ws://{host}{path}", sock=sock, origin=f"http://{host.lower()}", proxy=None
            ):  # type: ignore[arg-type]
                return 101
        except InvalidStatus as refused:
            return refused.response.status_code


def scraped_closes(stack: Stack, code: str) -> float:
    text = httpx.get(stack.base_url + "/metrics/").text
    for line in text.splitlines():
        if line.startswith(f'tapedeck_ingest_closes_total{{code="{code}"}}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_foreign_host_is_refused_everywhere(named: Stack) -> None:
    foreign = f"{EVIL}:{named.port}"
    headers = {"Host": foreign, "Origin": f"http://{foreign}"}
    for method, path in (
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions/abcdefgh-1234"),
        ("DELETE", "/api/sessions/abcdefgh-1234"),
        ("GET", "/api/download/abcdefgh-1234"),
        ("GET", "/"),
        ("GET", "/index.html"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/nothing-here"),
    ):
        response = httpx.request(method, named.base_url + path, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "host-not-allowed"
    closes_before = scraped_closes(named, "403")
    assert await ws_status(named, foreign, "/ws/video") == 403
    assert await ws_status(named, foreign, "/ws/audio?session=abcdefgh-1234&token=x") == 403
    assert scraped_closes(named, "403") == closes_before + 2
    assert httpx.get(named.base_url + "/api/sessions").json()["items"] == []  # nothing made


async def test_probes_answer_any_host(named: Stack) -> None:
    for host in (f"{EVIL}:{named.port}", "10.0.0.7:8000", "tapedeck-web"):
        for path in ("/healthz", "/readyz", "/metrics/"):
            response = httpx.get(named.base_url + path, headers={"Host": host})
            assert response.status_code == 200, (host, path, response.text)
        # Bare /metrics is not refused either (what it answers is the router's business).
        bare = httpx.get(named.base_url + "/metrics", headers={"Host": host})
        assert bare.status_code != 403, bare.text


@pytest.mark.parametrize(
    "host",
    [
        None,  # 127.0.0.1:PORT, as httpx sends it
        "localhost:{port}",
        "ui.localhost:{port}",
        "[::1]:{port}",
        "tapedeck.example",
        "TAPEDECK.EXAMPLE:{port}",
        "corp.example:{port}",
        "cam.corp.example",
    ],
)
async def test_allowed_names_work(named: Stack, host: str | None) -> None:
    name = host.format(port=named.port) if host else f"127.0.0.1:{named.port}"
    with httpx.Client(base_url=named.base_url, headers={"Host": name}) as client:
        assert client.get("/api/sessions").status_code == 200
        created = client.post("/api/sessions")
        assert created.status_code == 201, created.text
        page = client.get("/")
        assert page.status_code == 200 and "Tapedeck" in page.text
    session = created.json()
    path = f"/ws/video?session={session['id']}&token={session['uploadToken']}"
    assert await ws_status(named, name, path) == 101


@pytest.mark.parametrize(
    "head",
    [
        b"GET /api/sessions HTTP/1.0\r\n\r\n",  # HTTP/1.0 needs no Host
        b"GET /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
    ],
)
def test_no_single_host_is_refused(named: Stack, head: bytes) -> None:
    with socket.create_connection(("127.0.0.1", named.port)) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = answer.split(b"\r\n", 1)[0]
    assert status.split()[1] == b"403", answer[:300]
    assert b'"host-not-allowed"' in answer


def test_the_default_server_refuses_a_rebound_name(stack: Stack) -> None:
    """No TAPEDECK_ALLOWED_HOSTS, no token: what `tapedeck up` runs by default."""
    foreign = f"{EVIL}:{stack.port}"
    headers = {"Host": foreign, "Origin": f"http://{foreign}"}
    assert httpx.get(stack.base_url + "/api/sessions", headers=headers).status_code == 403
    assert httpx.post(stack.base_url + "/api/sessions", headers=headers).status_code == 403
    assert httpx.get(stack.base_url + "/healthz", headers=headers).status_code == 200
    assert httpx.get(stack.base_url + "/api/sessions").status_code == 200


# --- malformed credentials are refused, never a crash --------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Bearer sécret".encode(),
        f"Bearer {TOKEN}é".encode(),
        "Bearer \u00b2".encode(),
        "Bearer ²²".encode(),
        b"Bearer \xff\xfe",
        "Bearer 日本".encode(),
    ],
)
def test_a_non_ascii_bearer_token_is_refused(guarded: Stack, header: bytes) -> None:
    for method, path in (("GET", "/api/sessions"), ("GET", "/api/download/abcdefgh-1234")):
        response = httpx.request(method, guarded.base_url + path, headers={"Authorization": header})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("exp", "sig"),
    [
        ("²²²²²²²²²²²", "abc"),
        ("99999999999", "é"),
        ("99999999999", "ééé"),
        ("\uff11\uff12\uff13", "x"),
    ],
)
def test_a_non_ascii_download_signature_is_refused(guarded: Stack, exp: str, sig: str) -> None:
    response = httpx.get(
        guarded.base_url + "/api/download/abcdefgh-1234", params={"exp": exp, "sig": sig}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


async def test_a_non_ascii_upload_token_is_refused(guarded: Stack) -> None:
    with authed(guarded) as api:
        session_id = api.post("/api/sessions").json()["id"]  # one: creation is rate-limited
    for token in ("²²²².abc", "123.é", "99999999999.é", "99999999999.ééé", "١٢٣٤٥٦٧٨٩٠١.x"):
        with pytest.raises(UploadRejected) as refused:
            await upload_track(
                guarded.ws_base,
                "video",
                b"x",
                session_id=session_id,
                token=token,
                max_connections=1,
            )
        assert refused.value.code == 4401, (token, refused.value)
        assert refused.value.error and refused.value.error["code"] == "bad-token"


def test_cors_lets_another_site_post_json(tmp_path: Path) -> None:
    """A cross-site `fetch` with a JSON body (POST /api/sessions with a title) is preflighted
    for Content-Type; a preflight refused for it fails the call in the browser."""
    stack = make_stack(tmp_path, cors_origins="https://app.example").start()
    try:
        preflight = httpx.options(
            stack.base_url + "/api/sessions",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "content-type" in allowed and "authorization" in allowed
        other = httpx.options(
            stack.base_url + "/api/sessions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers
    finally:
        stack.stop()
