"""HTTP API contract against a real api process and real storage."""

from __future__ import annotations

import json

import httpx
import pytest

from harness import Stack
from tapedeck.ingest.uploader import upload_track


def error_of(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]


def test_create_and_detail(api: httpx.Client) -> None:
    created = api.post("/api/sessions")
    assert created.status_code == 201
    body = created.json()
    assert set(body) == {"id", "title", "uploadToken", "createdAt", "expiresAt"}
    detail = api.get(f"/api/sessions/{body['id']}").json()
    assert detail["state"] == "recording" and detail["tracks"] == [] and detail["progress"] == 0
    assert detail["downloadUrl"] is None and detail["output"] is None


def test_list_with_cursor(api: httpx.Client) -> None:
    ids = {api.post("/api/sessions").json()["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/sessions", params=params).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert ids <= set(seen) and len(seen) == len(set(seen))
    recording = api.get("/api/sessions", params={"state": "recording", "limit": 1000}).json()
    assert all(item["state"] == "recording" for item in recording["items"])


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/sessions/abcdefgh-unknown", 404, "not-found"),
        ("GET", "/api/sessions/..", 404, "not-found"),  # normalised away by the router
        ("GET", "/api/sessions/..%2F..%2Fetc", 404, "not-found"),  # %2F splits the path first
        ("GET", "/api/sessions/" + "a" * 64, 400, "invalid-session-id"),
        ("GET", "/api/sessions/UPPERCASE1", 400, "invalid-session-id"),
        ("DELETE", "/api/sessions/abcdefgh-unknown", 404, "not-found"),
        ("POST", "/api/compile-video/abcdefgh-unknown", 404, "not-found"),
        ("POST", "/api/compile-video/bad%2Fid%2F..%2F..", 404, "not-found"),
        ("POST", "/api/compile-video/bad.id.....", 400, "invalid-session-id"),
        ("GET", "/api/download/abcdefgh-unknown", 404, "not-found"),
        ("GET", "/api/download/%2E%2E%2F%2E%2E%2Fpasswd", 404, "not-found"),
        ("GET", "/api/download/%2E%2E", 400, "invalid-session-id"),
        ("GET", "/api/download/~root%00aaaa", 400, "invalid-session-id"),
        ("GET", "/api/sessions?limit=0", 422, "invalid-request"),
        ("GET", "/api/sessions?limit=100000000", 422, "invalid-request"),
        ("GET", "/api/sessions?limit=abc", 422, "invalid-request"),
        ("GET", "/api/sessions?state=dancing", 422, "invalid-request"),
        ("GET", "/api/sessions?cursor=%%%", 400, "invalid-cursor"),
        ("GET", "/api/sessions?cursor=MTc2NDMwMDAwMDAwMDowYzEzNjQ4OQ==", 400, "invalid-cursor"),
        ("GET", "/api/sessions?cursor=1:abcdefgh%0A", 400, "invalid-cursor"),
        ("GET", "/api/sessions/0", 400, "invalid-session-id"),
        ("GET", "/api/sessions/abcdefgh%0A", 400, "invalid-session-id"),
        ("DELETE", "/api/sessions/ABCDEFGH", 400, "invalid-session-id"),
        ("POST", "/api/compile-video/0", 400, "invalid-session-id"),
        ("GET", "/api/download/0", 400, "invalid-session-id"),
        ("PUT", "/api/sessions", 405, "method-not-allowed"),
    ],
)
def test_errors_are_json(api: httpx.Client, method: str, path: str, status: int, code: str) -> None:
    response = api.request(method, path)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert api.get("/healthz").status_code == 200


async def test_compile_refused_while_recording_and_when_empty(
    stack: Stack, api: httpx.Client
) -> None:
    body = api.post("/api/sessions").json()
    empty = api.post(f"/api/compile-video/{body['id']}")
    assert empty.status_code == 409 and error_of(empty)["code"] == "empty"

    from websockets.asyncio.client import connect

    url = f"{stack.ws_base}/ws/video?session={body['id']}&token={body['uploadToken']}"
    async with connect(url) as ws:
        await ws.send('{"type":"start","mimeType":"video/webm","startedAt":1}')
        await ws.recv()
        await ws.send(b"1234")
        await ws.recv()
        busy = api.post(f"/api/compile-video/{body['id']}")
        assert busy.status_code == 409 and error_of(busy)["code"] == "still-recording"
    not_ready = api.get(f"/api/download/{body['id']}")
    assert not_ready.status_code == 409 and error_of(not_ready)["code"] == "not-ready"


async def test_delete_removes_files(stack: Stack, api: httpx.Client) -> None:
    body = api.post("/api/sessions").json()
    await upload_track(
        stack.ws_base,
        "audio",
        b"a" * 100,
        session_id=body["id"],
        token=body["uploadToken"],
        mime_type="audio/webm",
    )
    assert (stack.data_dir / body["id"]).exists()
    assert api.delete(f"/api/sessions/{body['id']}").status_code == 204
    assert not (stack.data_dir / body["id"]).exists()
    for response in (
        api.get(f"/api/sessions/{body['id']}"),
        api.get(f"/api/download/{body['id']}"),
        api.delete(f"/api/sessions/{body['id']}"),
        api.post(f"/api/compile-video/{body['id']}"),
    ):
        assert response.status_code == 404


def test_openapi_health_and_metrics(api: httpx.Client) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {
        "/api/sessions",
        "/api/sessions/{session_id}",
        "/api/compile-video/{session_id}",
        "/api/download/{session_id}",
    } <= set(paths)
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}
    # The path a ServiceMonitor scrapes, exactly (the UI's mount at / must not swallow it).
    scraped = api.get("/metrics", follow_redirects=False)
    assert scraped.status_code == 200, scraped.text[:200]
    metrics = scraped.text
    assert "tapedeck_ingest_active_streams" in api.get("/metrics/").text
    for name in (
        "tapedeck_ingest_active_streams",
        "tapedeck_ingest_ack_latency_seconds",
        "tapedeck_compile_queue_depth",
        "tapedeck_ingest_bytes_received_total",
    ):
        assert name in metrics


def test_listing_survives_a_record_with_an_absurd_expiry(fresh_stack: Stack) -> None:
    """A session stored before TTLs were bounded (the operator passed `spec.ttl: 100000000d`
    through) must still list: its expiry is shown clamped, never a 500."""
    with httpx.Client(base_url=fresh_stack.base_url, timeout=30) as client:
        sid = client.post("/api/sessions").json()["id"]
        fresh_stack.storage.stop()
        manifest = fresh_stack.data_dir / sid / "session.json"
        record = json.loads(manifest.read_text())
        record["expires_at_ms"] = record["created_at_ms"] + 100_000_000 * 86_400_000
        manifest.write_text(json.dumps(record))
        fresh_stack.start_storage()

        listed = client.get("/api/sessions")
        assert listed.status_code == 200, listed.text
        item = next(i for i in listed.json()["items"] if i["id"] == sid)
        assert item["expiresAt"].startswith("9999-12-31"), item
        detail = client.get(f"/api/sessions/{sid}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["expiresAt"] == item["expiresAt"]


def test_readiness_declares_its_503(api: httpx.Client) -> None:
    """`/readyz` answers 503 while storage is not serving; the document says so."""
    responses = api.get("/openapi.json").json()["paths"]["/readyz"]["get"]["responses"]
    assert "503" in responses
