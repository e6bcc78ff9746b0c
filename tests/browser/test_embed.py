"""`<tapedeck-recorder>` embedded in a page that is not ours: another site (a second HTTP
server on its own port, so another origin) whose backend creates the session with the
API token and hands the page only the session id and its upload token. Chromium records
through the element, the WebSockets cross origins (TAPEDECK_ALLOWED_ORIGINS), and the
recording compiles."""

from __future__ import annotations

import html
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from browser.conftest import ROOT, in_ci
from browser.test_recording import probe
from harness import Up, free_port, start_up, wait_settled

pytestmark = pytest.mark.browser

API_TOKEN = "embedding-site-secret-api-token"
PACKAGE_DIST = ROOT / "frontend/packages/recorder/dist"
RECORD_SECONDS = 4.0
# Module files of the package's build: a plain name, nothing else is served.
MODULE_NAME = re.compile(r"^[a-z]+\.js$")


@dataclass
class Site:
    """The embedding site: its origin, and the sessions its backend created."""

    url: str
    sessions: list[str]
    tokens: list[str]


def page_html(tapedeck: str, session: dict[str, str] | None) -> bytes:
    attrs = ""
    if session:
        sid, token = html.escape(session["id"]), html.escape(session["uploadToken"])
        attrs = f'session-id="{sid}" upload-token="{token}"'
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Another site</title></head>
<body>
<main>
<h1>Another site's page</h1>
<tapedeck-recorder server="{html.escape(tapedeck)}" {attrs}></tapedeck-recorder>
</main>
<script type="module" src="/recorder/element.js"></script>
</body>
</html>""".encode()


def serve_site(
    port: int, tapedeck: str, *, create_sessions: bool = True
) -> tuple[ThreadingHTTPServer, Site]:
    """The other site's server: `/` creates a session server-side (the API token stays
    here) and embeds the element; `/recorder/*.js` is the package's build. Without
    `create_sessions` the element asks Tapedeck for a session itself."""
    site = Site(f"http://127.0.0.1:{port}", [], [])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/" and not create_sessions:
                self.reply(HTTPStatus.OK, "text/html; charset=utf-8", page_html(tapedeck, None))
                return
            if self.path == "/?same" and site.sessions:
                # The site shows the visitor their session again (after a reload).
                again = {"id": site.sessions[-1], "uploadToken": site.tokens[-1]}
                self.reply(HTTPStatus.OK, "text/html; charset=utf-8", page_html(tapedeck, again))
                return
            if self.path == "/":
                created = httpx.post(
                    f"{tapedeck}/api/sessions",
                    headers={"Authorization": f"Bearer {API_TOKEN}"},
                    timeout=30,
                )
                created.raise_for_status()
                session = created.json()
                site.sessions.append(session["id"])
                site.tokens.append(session["uploadToken"])
                self.reply(HTTPStatus.OK, "text/html; charset=utf-8", page_html(tapedeck, session))
                return
            name = self.path.removeprefix("/recorder/")
            if name != self.path and MODULE_NAME.match(name) and (PACKAGE_DIST / name).is_file():
                body = (PACKAGE_DIST / name).read_bytes()
                self.reply(HTTPStatus.OK, "text/javascript; charset=utf-8", body)
                return
            self.reply(HTTPStatus.NOT_FOUND, "text/plain", b"not found")

        def reply(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, site


@pytest.fixture(scope="module")
def site_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def tapedeck(tmp_path_factory: pytest.TempPathFactory, site_port: int) -> Iterator[Up]:
    """Tapedeck with an API token, accepting WebSockets from the embedding site's origin."""
    if not (PACKAGE_DIST / "element.js").is_file():
        message = f"missing the package build {PACKAGE_DIST}/element.js (make frontend)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    running = start_up(
        tmp_path_factory.mktemp("embed"),
        api_token=API_TOKEN,
        allowed_origins=f"http://127.0.0.1:{site_port}",
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def site(tapedeck: Up, site_port: int) -> Iterator[Site]:
    server, running = serve_site(site_port, tapedeck.url)
    try:
        yield running
    finally:
        server.shutdown()
        server.server_close()


def embedding_page(browser: Browser, origin: str) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["camera", "microphone"], origin=origin)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def test_embedded_element_records_cross_origin_and_compiles(
    browser: Browser, tapedeck: Up, site: Site, tmp_path: Path
) -> None:
    page, errors = embedding_page(browser, site.url)
    try:
        page.goto(f"{site.url}/")
        element = page.locator("tapedeck-recorder")
        expect(element).to_have_attribute("data-state", "idle", timeout=15_000)  # defined
        assert API_TOKEN not in page.content()
        session_id = site.sessions[-1]

        page.get_by_role("button", name="Start recording").click()
        expect(element).to_have_attribute("data-state", "recording", timeout=15_000)
        for track in ("video", "audio"):
            expect(page.get_by_test_id(f"track-status-{track}")).not_to_have_attribute(
                "data-bytes-acknowledged", "0", timeout=15_000
            )
        page.wait_for_timeout(RECORD_SECONDS * 1000)
        page.get_by_role("button", name="Stop recording").click()
        expect(element).to_have_attribute("data-state", "finished", timeout=30_000)
        for track in ("video", "audio"):
            status = page.get_by_test_id(f"track-status-{track}")
            expect(status).to_have_attribute("data-state", "uploaded")
            assert status.get_attribute("data-backlog") == "0"
        expect(page.get_by_role("status")).to_have_text("Recording uploaded.")
        # One recording per session: a second needs a new session from the site.
        page.get_by_role("button", name="Start recording").click()
        expect(page.get_by_role("status")).to_contain_text("This session is recorded")
        expect(element).to_have_attribute("data-state", "finished")
        # The site hands over a new session: the element records into that one.
        second = httpx.post(
            f"{tapedeck.url}/api/sessions",
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=30,
        ).json()
        element.evaluate(
            "(el, s) => { el.setAttribute('upload-token', s.uploadToken);"
            " el.setAttribute('session-id', s.id); }",
            second,
        )
        expect(element).to_have_attribute("data-state", "idle")
        page.get_by_role("button", name="Start recording").click()
        expect(element).to_have_attribute("data-session-id", second["id"], timeout=15_000)
        expect(element).to_have_attribute("data-state", "recording", timeout=15_000)
        page.get_by_role("button", name="Stop recording").click()
        expect(element).to_have_attribute("data-state", "finished", timeout=30_000)
        expect(page.get_by_test_id("track-status-video")).to_have_attribute(
            "data-state", "uploaded"
        )
        assert errors == [], errors
    finally:
        page.context.close()

    # The embedding site's backend compiles it and fetches the MP4 (with its API token).
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=tapedeck.url, headers=auth, timeout=60) as api:
        detail = api.get(f"/api/sessions/{session_id}").json()
        assert sorted(t["name"] for t in detail["tracks"]) == ["audio", "video"]
        assert all(t["finished"] for t in detail["tracks"]), json.dumps(detail)
        assert api.post(f"/api/compile-video/{session_id}").status_code in (200, 202)
        assert wait_settled(api, session_id)[-1]["state"] == "ready"
        out = tmp_path / "embedded.mp4"
        out.write_bytes(api.get(f"/api/download/{session_id}").content)
    codecs, duration = probe(out)
    assert codecs == ("aac", "h264")
    assert duration > RECORD_SECONDS / 2, duration


def test_element_finishes_an_upload_a_reload_interrupted(
    browser: Browser, tapedeck: Up, site: Site
) -> None:
    """A reload mid-recording: the element on the next page finds the session's chunks in
    IndexedDB, resends what the server lacks and finishes both tracks."""
    page, errors = embedding_page(browser, site.url)
    try:
        page.goto(f"{site.url}/")
        element = page.locator("tapedeck-recorder")
        session_id = site.sessions[-1]
        page.get_by_role("button", name="Start recording").click()
        expect(element).to_have_attribute("data-state", "recording", timeout=15_000)
        for track in ("video", "audio"):
            expect(page.get_by_test_id(f"track-status-{track}")).not_to_have_attribute(
                "data-bytes-acknowledged", "0", timeout=15_000
            )
        page.wait_for_timeout(2000)
        page.goto(f"{site.url}/?same")  # the recorder goes with the page; the chunks stay
        expect(page.locator("tapedeck-recorder")).to_have_attribute("session-id", session_id)
        for track in ("video", "audio"):
            expect(page.get_by_test_id(f"track-status-{track}")).to_have_attribute(
                "data-state", "uploaded", timeout=30_000
            )
        expect(page.get_by_role("status")).to_have_text("Recording uploaded.")
        assert errors == [], errors
    finally:
        page.context.close()
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    detail = httpx.get(f"{tapedeck.url}/api/sessions/{session_id}", headers=auth, timeout=30)
    tracks = detail.json()["tracks"]
    assert {t["name"]: t["finished"] for t in tracks} == {"video": True, "audio": True}
    assert all(t["bytes"] > 0 for t in tracks)


def test_origin_not_allowed_cannot_upload(browser: Browser, tapedeck: Up, site: Site) -> None:
    """The same page from an origin missing from TAPEDECK_ALLOWED_ORIGINS: the WebSocket
    handshake is refused, so the element never gets an upload through (it keeps retrying,
    and keeps the recording)."""
    server, other = serve_site(free_port(), tapedeck.url)
    page, _ = embedding_page(browser, other.url)
    try:
        page.goto(f"{other.url}/")
        element = page.locator("tapedeck-recorder")
        page.get_by_role("button", name="Start recording").click()
        expect(element).to_have_attribute("data-state", "recording", timeout=15_000)
        video = page.get_by_test_id("track-status-video")
        expect(video).to_have_attribute("data-state", "reconnecting…", timeout=15_000)
        assert video.get_attribute("data-bytes-acknowledged") == "0"
        page.get_by_role("button", name="Stop recording").click()
    finally:
        page.context.close()
        server.shutdown()
        server.server_close()


def test_element_creates_its_session_through_cors(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory, tapedeck: Up
) -> None:
    """Against a Tapedeck without an API token the element creates its own session with
    `POST /api/sessions`, cross-site: allowed by TAPEDECK_CORS_ORIGINS (and the sockets by
    TAPEDECK_ALLOWED_ORIGINS)."""
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    open_server = start_up(
        tmp_path_factory.mktemp("embed-open"),
        allowed_origins=origin,
        cors_origins=origin,
    )
    server, other = serve_site(port, open_server.url, create_sessions=False)
    page, errors = embedding_page(browser, other.url)
    try:
        page.goto(f"{other.url}/")
        element = page.locator("tapedeck-recorder")
        page.get_by_role("button", name="Start recording").click()
        expect(element).to_have_attribute("data-state", "recording", timeout=15_000)
        session_id = element.get_attribute("data-session-id") or ""
        expect(page.get_by_test_id("track-status-video")).not_to_have_attribute(
            "data-bytes-acknowledged", "0", timeout=15_000
        )
        page.get_by_role("button", name="Stop recording").click()
        expect(element).to_have_attribute("data-state", "finished", timeout=30_000)
        expect(page.get_by_test_id("track-status-audio")).to_have_attribute(
            "data-state", "uploaded"
        )
        assert errors == [], errors
        detail = httpx.get(f"{open_server.url}/api/sessions/{session_id}", timeout=30).json()
        assert {t["name"]: t["finished"] for t in detail["tracks"]} == {
            "video": True,
            "audio": True,
        }
    finally:
        page.context.close()
        server.shutdown()
        server.server_close()
        open_server.stop()
