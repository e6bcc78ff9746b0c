"""Many dropped connections during one recording lose nothing."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from harness import Stack
from tapedeck.ingest.uploader import upload_track

pytestmark = pytest.mark.faults
DROPS_PER_TRACK = 25


def dropper(total: int, drops: int, seed: int) -> tuple[list[int], object]:
    rng = random.Random(seed)
    points = sorted(rng.sample(range(1, total), drops))
    done: list[int] = []

    async def after_frame(ws: ClientConnection, offset: int) -> None:
        while points and points[0] <= offset:
            done.append(points.pop(0))
            ws.transport.abort()  # the network vanishes: no close frame
        await asyncio.sleep(0)

    return done, after_frame


async def test_fifty_random_drops_on_both_tracks(
    stack: Stack, h264_webm: Path, opus_webm: Path
) -> None:
    video = h264_webm.read_bytes() * 3
    audio = opus_webm.read_bytes() * 3
    video_drops, video_hook = dropper(len(video), DROPS_PER_TRACK, seed=1)
    audio_drops, audio_hook = dropper(len(audio), DROPS_PER_TRACK, seed=2)
    with httpx.Client(base_url=stack.base_url) as api:
        created = api.post("/api/sessions").json()
    common = {"session_id": created["id"], "token": created["uploadToken"]}
    results = await asyncio.gather(
        upload_track(
            stack.ws_base,
            "video",
            video,
            frame_bytes=len(video) // 200,
            after_frame=video_hook,
            **common,
        ),  # type: ignore[arg-type]
        upload_track(
            stack.ws_base,
            "audio",
            audio,
            frame_bytes=max(1, len(audio) // 200),
            mime_type="audio/webm;codecs=opus",
            after_frame=audio_hook,
            **common,
        ),  # type: ignore[arg-type]
    )
    assert len(video_drops) + len(audio_drops) == 2 * DROPS_PER_TRACK
    assert sum(r.connections for r in results) >= 2 * DROPS_PER_TRACK
    directory = stack.data_dir / created["id"]
    assert (directory / "video.webm").read_bytes() == video
    assert (directory / "audio.webm").read_bytes() == audio
