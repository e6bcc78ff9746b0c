"""Issue 19 end to end on real processes: titles, and what a compile writes beside the MP4
(poster, storyboard, HLS) from a real FFmpeg, served by the api."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from harness import Stack, make_stack, wait_extras, wait_settled
from media import ffmpeg_binary, packets
from tapedeck.ingest.uploader import upload_track

BLACK_SECONDS, PICTURE_SECONDS = 1.5, 4.5
LUMA_THRESHOLD = 40.0
"""Mean luma (0-255) of the poster: a black frame is 16; testsrc2 is well above 60."""


@pytest.fixture(scope="module")
def hls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """HLS for every compile (the threshold is a setting), so a short recording has it."""
    running = make_stack(tmp_path_factory.mktemp("outputs"), hls_min_duration="0s").start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(hls_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hls_stack.base_url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def dark_start(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """H.264 in Matroska (Chromium's shape) whose first 1.5 s are black, like a camera
    waking up: a poster of the first frame would be black."""
    out = tmp_path_factory.mktemp("media") / "dark-start.webm"
    argv = [
        ffmpeg_binary(),
        *("-hide_banner", "-nostdin", "-loglevel", "error", "-y"),
        *("-f", "lavfi", "-i", f"color=black:size=640x360:rate=30:duration={BLACK_SECONDS}"),
        *("-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={PICTURE_SECONDS}"),
        *("-filter_complex", "[0][1]concat=n=2:v=1[v]", "-map", "[v]"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p"),
        *("-f", "matroska", "-live", "1", str(out)),
    ]
    subprocess.run(argv, check=True, capture_output=True, timeout=120)
    return out


def mean_luma(jpeg: bytes, path: Path) -> float:
    path.write_bytes(jpeg)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0)).reformat(format="gray")
    plane = frame.planes[0]
    data, stride = bytes(plane), plane.line_size
    rows = [data[y * stride : y * stride + frame.width] for y in range(frame.height)]
    return sum(sum(row) for row in rows) / (frame.width * frame.height)


async def record(api: httpx.Client, stack: Stack, video: Path, title: str) -> str:
    created = api.post("/api/sessions", json={"title": title})
    assert created.status_code == 201, created.text
    body = created.json()
    await upload_track(
        stack.ws_base,
        "video",
        video.read_bytes(),
        session_id=body["id"],
        token=body["uploadToken"],
        mime_type="video/webm;codecs=h264",
        started_at=1_764_303_440_186.0,
        frame_bytes=max(1024, video.stat().st_size // 4),
    )
    return str(body["id"])


def compiled(api: httpx.Client, sid: str) -> dict[str, Any]:
    """`ready`, then every extra (they follow `ready`)."""
    assert api.post(f"/api/compile-video/{sid}").status_code == 202
    detail = wait_settled(api, sid)[-1]
    assert detail["state"] == "ready", detail
    return wait_extras(api, sid)


async def test_titles_are_set_changed_searched_and_name_the_download(
    hls_stack: Stack, api: httpx.Client, dark_start: Path
) -> None:
    plain = api.post("/api/sessions").json()
    assert plain["title"].startswith("Recording ") and plain["title"].endswith(" UTC")
    for bad, status in (({"title": "x" * 201}, 400), ({"title": "a\x00b"}, 400), ({}, 422)):
        refused = api.patch(f"/api/sessions/{plain['id']}", json=bad)
        assert refused.status_code == status, refused.text
        assert refused.json()["error"]["message"]
    assert api.post("/api/sessions", json={"title": "   "}).json()["error"]["code"] == (
        "invalid-title"
    )
    unknown = api.patch("/api/sessions/no-such-session", json={"title": "x"})
    assert unknown.status_code == 404

    sid = await record(api, hls_stack, dark_start, "Réunion d'équipe")
    renamed = api.patch(f"/api/sessions/{plain['id']}", json={"title": "  Weekly   sync "})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Weekly sync"

    def found(q: str) -> set[str]:
        page = api.get("/api/sessions", params={"q": q, "limit": 1000})
        assert page.status_code == 200, page.text
        return {item["id"] for item in page.json()["items"]}

    assert found("RÉUNION") == {sid}
    assert found("weekly") == {plain["id"]}
    assert found("nothing has this title") == set()
    assert api.get("/api/sessions", params={"q": "x" * 201}).status_code == 422

    compiled(api, sid)
    download = api.head(f"/api/download/{sid}")
    assert download.headers["content-disposition"] == (
        f"attachment; filename=\"{sid}.mp4\"; filename*=UTF-8''R%C3%A9union%20d%27%C3%A9quipe.mp4"
    )
    api.patch(f"/api/sessions/{sid}", json={"title": "Weekly sync"})
    assert api.head(f"/api/download/{sid}").headers["content-disposition"] == (
        'attachment; filename="Weekly sync.mp4"'
    )


async def test_a_compile_writes_a_poster_a_storyboard_and_hls(
    hls_stack: Stack, api: httpx.Client, dark_start: Path, tmp_path: Path
) -> None:
    sid = await record(api, hls_stack, dark_start, "outputs")
    detail = compiled(api, sid)
    media = detail["media"]
    assert all(media[k] for k in ("posterUrl", "storyboardUrl", "hlsUrl")), media

    poster = api.get(media["posterUrl"])
    assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
    assert "immutable" in poster.headers["cache-control"]  # the URL carries its ETag
    luma = mean_luma(poster.content, tmp_path / "poster.jpg")
    assert luma > LUMA_THRESHOLD, f"the poster is dark (mean luma {luma:.1f})"
    again = api.get(
        f"/api/sessions/{sid}/poster.jpg", headers={"If-None-Match": poster.headers["etag"]}
    )
    assert again.status_code == 304 and again.headers["cache-control"] == "private, no-cache"

    vtt = api.get(media["storyboardUrl"])
    assert vtt.status_code == 200 and vtt.headers["content-type"].startswith("text/vtt")
    cues = vtt.text.strip().split("\n\n")[1:]
    duration = detail["durationSeconds"]
    assert len(cues) == math.ceil(duration - 1e-3)
    sprite_ref = cues[-1].split("\n")[1]
    assert sprite_ref.startswith("storyboard.jpg?v=") and "#xywh=" in sprite_ref
    sprite = api.get(f"/api/sessions/{sid}/{sprite_ref.split('#')[0]}")
    assert sprite.status_code == 200 and sprite.headers["content-type"] == "image/jpeg"
    (tmp_path / "sprite.jpg").write_bytes(sprite.content)
    with av.open(str(tmp_path / "sprite.jpg")) as container:
        tile = next(container.decode(video=0))
    assert (tile.width, tile.height) == (160 * min(10, len(cues)), 90 * math.ceil(len(cues) / 10))

    playlist = api.get(media["hlsUrl"])
    assert playlist.status_code == 200
    assert playlist.headers["content-type"] == "application/vnd.apple.mpegurl"
    lines = playlist.text.splitlines()
    assert "#EXT-X-ENDLIST" in lines
    init = next(line for line in lines if line.startswith("#EXT-X-MAP:")).split('"')[1]
    parts = [init, *(line for line in lines if line and not line.startswith("#"))]
    joined = b""
    for part in parts:
        got = api.get(f"/api/sessions/{sid}/hls/{part}")
        assert got.status_code == 200, (part, got.text)
        joined += got.content
    (tmp_path / "hls.mp4").write_bytes(joined)
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(api.get(f"/api/download/{sid}").content)
    assert packets(tmp_path / "hls.mp4", "video") == packets(mp4, "video")  # -c copy

    assert api.get(f"/api/sessions/{sid}/hls/poster.jpg").status_code == 404
    assert api.get(f"/api/sessions/{sid}/hls-00000.m4s").status_code == 404
    assert api.get(f"/api/sessions/{sid}/nothing.exe").status_code == 422
    assert api.get(f"/api/sessions/{sid}/storyboard.vtt?v=x").headers["cache-control"] == (
        "private, no-cache"
    )


TOKEN = "outputs-token-0123456789"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(
        tmp_path_factory.mktemp("guarded-outputs"), api_token=TOKEN, hls_min_duration="0s"
    ).start()
    try:
        yield running
    finally:
        running.stop()


async def test_media_urls_are_signed_and_so_are_the_parts_they_name(
    guarded: Stack, dark_start: Path
) -> None:
    """An `<img>`, a `<video>` and hls.js send no bearer token: their URLs carry a signature,
    and the playlist and index hand it on to every part they name."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        httpx.Client(base_url=guarded.base_url, timeout=30, headers=headers) as api,
        httpx.Client(base_url=guarded.base_url, timeout=30) as anonymous,
    ):
        sid = await record(api, guarded, dark_start, "signed")
        media = compiled(api, sid)["media"]
        assert "sig=" in media["posterUrl"] and "exp=" in media["posterUrl"]
        assert anonymous.get(media["posterUrl"]).status_code == 200
        assert anonymous.get(f"/api/sessions/{sid}/poster.jpg").status_code == 401
        forged = media["posterUrl"].replace("sig=", "sig=x")
        assert anonymous.get(forged).status_code == 401
        playlist = anonymous.get(media["hlsUrl"])
        assert playlist.status_code == 200
        parts = [line for line in playlist.text.splitlines() if line and line[0] != "#"]
        assert parts and all("sig=" in part for part in parts)
        for part in parts:
            assert anonymous.get(f"/api/sessions/{sid}/hls/{part}").status_code == 200
        vtt = anonymous.get(media["storyboardUrl"]).text
        sprite = next(line for line in vtt.splitlines() if "#xywh=" in line).split("#")[0]
        assert anonymous.get(f"/api/sessions/{sid}/{sprite}").status_code == 200
