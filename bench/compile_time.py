"""Compile time for the same recording length recorded as H.264 (remux) and as VP8
(transcode), each through the real pipeline: upload → `POST /api/compile-video` → ready.
The VP8 transcode is the baseline; the summary is the speed-up of the remux.

    python bench/compile_time.py [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from _common import harness, media
from tapedeck.ingest.uploader import upload_track

T0 = 1_760_000_000_000.0


async def timed_compile(stack: harness.Stack, video: Path, audio: Path, mime: str) -> float:
    with httpx.Client(base_url=stack.base_url, timeout=60) as api:
        created = api.post("/api/sessions").json()
        await asyncio.gather(
            upload_track(
                stack.ws_base,
                "video",
                video.read_bytes(),
                session_id=created["id"],
                token=created["uploadToken"],
                mime_type=mime,
                started_at=T0,
                frame_bytes=320 * 1024,
            ),
            upload_track(
                stack.ws_base,
                "audio",
                audio.read_bytes(),
                session_id=created["id"],
                token=created["uploadToken"],
                mime_type="audio/webm;codecs=opus",
                started_at=T0,
                frame_bytes=32 * 1024,
            ),
        )
        started = time.perf_counter()
        assert api.post(f"/api/compile-video/{created['id']}").status_code == 202
        while True:
            detail = api.get(f"/api/sessions/{created['id']}").json()
            if detail["state"] in ("ready", "failed"):
                assert detail["state"] == "ready", detail["error"]
                return time.perf_counter() - started
            await asyncio.sleep(0.05)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        print(f"making {args.seconds:.0f} s fixtures (640x360 @ 30 fps, Opus audio)...")
        h264 = media.make_h264_webm(tmp / "h264.webm", args.seconds)
        vp8 = media.make_vp8_webm(tmp / "vp8.webm", args.seconds)
        opus = media.make_opus_webm(tmp / "opus.webm", args.seconds)
        stack = harness.make_stack(tmp).start()
        try:
            remux = await timed_compile(stack, h264, opus, "video/webm;codecs=h264")
            transcode = await timed_compile(stack, vp8, opus, "video/webm;codecs=vp8")
        finally:
            stack.stop()
    print(f"\n{'input':<22} {'compile s':>10} {'x real time':>12}")
    print(f"{'H.264 (remux)':<22} {remux:>10.2f} {args.seconds / remux:>12.1f}")
    print(f"{'VP8 (transcode)':<22} {transcode:>10.2f} {args.seconds / transcode:>12.1f}")
    print(
        f"\nsummary: {args.seconds:.0f} s recording compiles in {remux:.2f} s as H.264 vs "
        f"{transcode:.2f} s as VP8: remux is {transcode / remux:.1f}x faster than transcode"
    )


if __name__ == "__main__":
    asyncio.run(main())
