"""The embedded worker compiles a recording while it records (compiler/follow.py): the MP4
comes out of the follower, and is the one a one-shot compile of the same tracks makes."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import Stack, make_stack
from media import ffmpeg_binary, packet_digest
from tapedeck.compiler.run import compile_files
from tapedeck.ingest.uploader import upload_track

T0 = 1_760_000_000_000.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    stack = make_stack(tmp_path).start()
    yield stack
    stack.stop()


async def record(
    stack: Stack,
    session: dict[str, str],
    tracks: list[tuple[str, Path, str]],
    halfway: str | None = None,
) -> None:
    """Streams each track in 12 frames over ~6 s, as recorders hand over their chunks.
    `halfway`: the video track waits after half its bytes until web.log says this (so the
    follower plans while the recording goes on, however slow the machine is)."""
    log = stack.data_dir.parent / "web.log"

    async def gate(_ws: object, offset: int, *, total: int) -> None:
        if halfway is None or offset < total // 2 or offset >= total:
            return
        deadline = time.monotonic() + 60
        while halfway not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"web.log never said {halfway!r}"
            await asyncio.sleep(0.1)

    uploads = []
    for name, path, mime in tracks:
        data = path.read_bytes()
        uploads.append(
            upload_track(
                stack.ws_base,
                name,
                data,
                session_id=session["id"],
                token=session["uploadToken"],
                mime_type=mime,
                started_at=T0,
                frame_bytes=len(data) // 12 + 1,
                frame_interval=0.5,
                after_frame=functools.partial(gate, total=len(data)) if name == "video" else None,
            )
        )
    await asyncio.gather(*uploads)


def compiled_while_recording(
    stack: Stack, tracks: list[tuple[str, Path, str]], tmp_path: Path, halfway: str | None = None
) -> tuple[Path, str]:
    """Records `tracks` (see `record`), asks for the compile, waits for `ready`: the MP4 and
    the web process's log. Checks it has the packets of a one-shot compile of the tracks."""
    with httpx.Client(base_url=stack.base_url, timeout=30) as api:
        session = api.post("/api/sessions").json()
        asyncio.run(record(stack, session, tracks, halfway=halfway))
        assert api.post(f"/api/compile-video/{session['id']}").status_code == 202
        deadline = time.monotonic() + 60
        while (detail := api.get(f"/api/sessions/{session['id']}").json())["state"] != "ready":
            assert detail["state"] != "failed", detail["error"]
            assert time.monotonic() < deadline, detail
            time.sleep(0.05)
        got = tmp_path / "got.mp4"
        got.write_bytes(api.get(f"/api/download/{session['id']}").content)
    want = tmp_path / "want.mp4"
    sources = [(name, path, T0) for name, path, _ in tracks]
    asyncio.run(compile_files(ffmpeg_binary(), sources, want))
    assert packet_digest(got) == packet_digest(want)
    return got, (stack.data_dir.parent / "web.log").read_text()


def test_a_recording_is_compiled_while_it_records(
    stack: Stack, vp8_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    tracks = [("video", vp8_webm, "video/webm;codecs=vp8"), ("audio", opus_webm, "audio/webm")]
    _, log = compiled_while_recording(stack, tracks, tmp_path)
    assert "compiling while recording" in log and "finishing what was prepared" in log


def test_an_h264_recording_is_muxed_and_uploaded_while_it_records(
    stack: Stack, h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    """The final mux runs while recording and its MP4 is in storage before the stop: the
    compile fills its head in (docs/performance.md). Same packets as a one-shot compile, and
    the index before the media (it plays while it downloads)."""
    tracks = [("video", h264_webm, "video/webm;codecs=h264"), ("audio", opus_webm, "audio/webm")]
    got, log = compiled_while_recording(
        stack, tracks, tmp_path, halfway="compiling while recording, the"
    )
    assert "the final mux" in log and "published the MP4 uploaded while recording" in log
    data = got.read_bytes()
    assert data[4:8] == b"ftyp" and data.index(b"moov") < data.index(b"mdat")
