"""End to end on real processes: browser-shaped recordings over WebSocket → storage →
compile (real FFmpeg) → download, checked with PyAV."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from harness import Stack, record_session, wait_settled
from media import make_garbage, packets, top_level_boxes
from tapedeck.ingest.uploader import upload_track

SECONDS = 4.0  # the conftest fixtures' length


def compile_and_wait(api: httpx.Client, session_id: str, timeout: float = 120) -> dict[str, Any]:
    accepted = api.post(f"/api/compile-video/{session_id}")
    assert accepted.status_code == 202 and accepted.json() == {"state": "queued"}, accepted.text
    again = api.post(f"/api/compile-video/{session_id}")  # idempotent: no second job
    assert again.status_code == 202 and again.json()["state"] in ("queued", "compiling", "ready")
    seen = wait_settled(api, session_id, timeout)
    progress = [detail["progress"] for detail in seen]
    assert progress == sorted(progress), progress
    return seen[-1]


def duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / av.time_base


def codecs(path: Path) -> tuple[str, ...]:
    with av.open(str(path)) as container:
        return tuple(
            sorted(s.codec_context.name for s in container.streams if s.type in ("audio", "video"))
        )


def download(api: httpx.Client, session_id: str, target: Path) -> httpx.Response:
    response = api.get(f"/api/download/{session_id}")
    assert response.status_code == 200, response.text
    target.write_bytes(response.content)
    return response


async def test_h264_recording_is_remuxed_bit_exact(
    stack: Stack, api: httpx.Client, h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    sid = await record_session(stack.ws_base, api, h264_webm, opus_webm)
    detail = compile_and_wait(api, sid)
    assert detail["state"] == "ready", detail
    assert detail["progress"] == 1.0 and detail["compileAttempts"] == 1
    assert detail["output"]["videoCodec"] == "h264" and detail["output"]["audioCodec"] == "aac"
    out = tmp_path / "out.mp4"
    response = download(api, sid, out)
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-disposition"] == f'attachment; filename="{sid}.mp4"'
    assert codecs(out) == ("aac", "h264")
    assert abs(duration(out) - SECONDS) <= 0.3
    assert packets(out, "video") == packets(h264_webm, "video")  # stream copy, not re-encode
    boxes = top_level_boxes(out)
    assert boxes.index("moov") < boxes.index("mdat")  # +faststart
    assert detail["output"]["size"] == out.stat().st_size
    assert abs(detail["durationSeconds"] - duration(out)) < 0.05
    check_ranges(api, sid, out.read_bytes(), response.headers["etag"])

    assert api.delete(f"/api/sessions/{sid}").status_code == 204
    for gone in (
        api.get(f"/api/sessions/{sid}"),
        api.get(f"/api/download/{sid}"),
        api.post(f"/api/compile-video/{sid}"),
    ):
        assert gone.status_code == 404
    assert not (stack.data_dir / sid).exists()


def check_ranges(api: httpx.Client, sid: str, body: bytes, etag: str) -> None:
    url, size = f"/api/download/{sid}", len(body)
    first = api.get(url, headers={"Range": "bytes=0-99"})
    assert first.status_code == 206 and first.content == body[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    middle = api.get(url, headers={"Range": f"bytes={size // 2}-{size // 2 + 4095}"})
    assert middle.status_code == 206 and middle.content == body[size // 2 : size // 2 + 4096]
    suffix = api.get(url, headers={"Range": "bytes=-500"})
    assert suffix.status_code == 206 and suffix.content == body[-500:]
    open_ended = api.get(url, headers={"Range": f"bytes={size - 10}-"})
    assert open_ended.content == body[-10:]
    beyond = api.get(url, headers={"Range": f"bytes={size}-{size + 10}"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"
    assert beyond.json()["error"]["code"] == "range-not-satisfiable"
    for malformed in ("bytes=abc", "items=0-1", "bytes=5-1", "bytes=0-1,5-6"):
        whole = api.get(url, headers={"Range": malformed})
        assert whole.status_code == 200 and whole.content == body, malformed
    assert api.get(url, headers={"If-None-Match": etag}).status_code == 304
    stale = api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and len(stale.content) == size
    head = api.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(size)


async def test_vp8_recording_is_transcoded(
    stack: Stack, api: httpx.Client, vp8_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    sid = await record_session(
        stack.ws_base, api, vp8_webm, opus_webm, video_mime="video/webm;codecs=vp8"
    )
    detail = compile_and_wait(api, sid)
    assert detail["state"] == "ready", detail
    out = tmp_path / "vp8.mp4"
    download(api, sid, out)
    assert codecs(out) == ("aac", "h264")
    assert abs(duration(out) - SECONDS) <= 0.3


@pytest.mark.parametrize("tracks", ["video", "audio"])
async def test_single_track_sessions(
    stack: Stack, api: httpx.Client, h264_webm: Path, opus_webm: Path, tmp_path: Path, tracks: str
) -> None:
    video, audio = (h264_webm, None) if tracks == "video" else (None, opus_webm)
    sid = await record_session(stack.ws_base, api, video, audio)
    assert compile_and_wait(api, sid)["state"] == "ready"
    out = tmp_path / "single.mp4"
    download(api, sid, out)
    assert codecs(out) == (("h264",) if tracks == "video" else ("aac",))


async def test_garbage_fails_readably_and_keeps_inputs(
    stack: Stack, api: httpx.Client, tmp_path: Path
) -> None:
    garbage = make_garbage(tmp_path / "garbage.webm", 200_000).read_bytes()
    created = api.post("/api/sessions").json()
    await upload_track(
        stack.ws_base, "video", garbage, session_id=created["id"], token=created["uploadToken"]
    )
    detail = compile_and_wait(api, created["id"])
    assert detail["state"] == "failed"
    assert detail["error"] and len(detail["error"]) > 10
    assert (stack.data_dir / created["id"] / "video.webm").read_bytes() == garbage
    assert api.get("/readyz").status_code == 200
    retry = api.post(f"/api/compile-video/{created['id']}")  # a failed session may be retried
    assert retry.status_code == 202


async def test_storage_killed_mid_stream_loses_nothing_acknowledged(
    fresh_stack: Stack, h264_webm: Path, tmp_path: Path
) -> None:
    """SIGKILL storage while a recording streams: every byte acknowledged before the kill is on
    disk, the client resumes once storage is back, and the final track is byte-identical."""
    stack = fresh_stack
    with httpx.Client(base_url=stack.base_url) as api:
        created = api.post("/api/sessions").json()
    source = (h264_webm.read_bytes() * 8)[:3_000_000]
    acked_at_kill: list[int] = []
    restarted = threading.Event()

    async def kill_midway(ws: Any, offset: int) -> None:
        if not acked_at_kill and offset > len(source) // 3:
            await asyncio.sleep(0.2)  # let some acks arrive
            acked_at_kill.append(max(result_acks or [0]))
            stack.storage.kill()
            on_disk = (stack.data_dir / created["id"] / "video.webm").read_bytes()
            assert len(on_disk) >= acked_at_kill[0]
            assert on_disk[: acked_at_kill[0]] == source[: acked_at_kill[0]]
            threading.Timer(1.0, lambda: (stack.start_storage(), restarted.set())).start()

    result_acks: list[int] = []

    async def upload() -> Any:
        from tapedeck.ingest import uploader

        original = uploader._collect

        async def spy(ws: Any, result: Any, *rest: Any) -> Any:
            result.acks = result_acks
            return await original(ws, result, *rest)

        uploader._collect = spy  # type: ignore[assignment]
        try:
            return await upload_track(
                stack.ws_base,
                "video",
                source,
                session_id=created["id"],
                token=created["uploadToken"],
                frame_bytes=64 * 1024,
                after_frame=kill_midway,
                frame_interval=0.005,
            )
        finally:
            uploader._collect = original  # type: ignore[assignment]

    result = await upload()
    assert restarted.wait(10)
    assert acked_at_kill and acked_at_kill[0] > 0
    assert result.connections >= 2
    assert (stack.data_dir / created["id"] / "video.webm").read_bytes() == source
