"""Ingest memory over a long recording: stream N minutes of 2.5 Mbit/s media in 1 s frames
through the real ingest + storage processes and print the web process's RSS as it goes.

Baseline (same run): the web process's RSS after it has served one 60 s stream, i.e. the
idle footprint with every code path and the allocator's arenas warmed up.
Target: growth under 1 MiB over 10 minutes.

    python bench/ingest_memory.py [--minutes 10] [--speed 10]

Frames are paced at `speed` times real time (1 = as a browser sends them; 0 = unpaced, which
measures the backpressure window rather than a recording).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from _common import harness
from tapedeck.ingest.uploader import upload_track

BITRATE = 2_500_000 // 8  # bytes per second of media
MiB = 1024 * 1024


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--speed", type=float, default=10, help="times real time; 0: unpaced")
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory() as tmp:
        stack = harness.make_stack(Path(tmp)).start()
        try:
            assert stack.web.process and stack.storage.process
            web, storage = stack.web.process.pid, stack.storage.process.pid
            with httpx.Client(base_url=stack.base_url) as api:
                warm = api.post("/api/sessions").json()
                await upload_track(
                    stack.ws_base,
                    "video",
                    os.urandom(BITRATE) * 60,
                    session_id=warm["id"],
                    token=warm["uploadToken"],
                    frame_bytes=BITRATE,
                )
                created = api.post("/api/sessions").json()
            base_web, base_storage = rss(web), rss(storage)
            print(
                f"baseline RSS: ingest/web {base_web / MiB:.1f} MiB, "
                f"storage {base_storage / MiB:.1f} MiB"
            )
            print(
                f"streaming {seconds} s of media ({seconds * BITRATE / MiB:.0f} MiB) "
                f"in {BITRATE / 1024:.0f} KiB frames at {args.speed or 'unpaced'}x real time"
            )
            frame = os.urandom(BITRATE)
            data = frame * seconds  # same bytes repeated: the server cannot tell
            samples: list[tuple[int, int, int]] = []
            next_sample = 0

            async def sample(_ws: object, offset: int) -> None:
                nonlocal next_sample
                if offset >= next_sample:
                    samples.append((offset, rss(web), rss(storage)))
                    next_sample += len(data) // 10

            started = time.perf_counter()
            result = await upload_track(
                stack.ws_base,
                "video",
                data,
                session_id=created["id"],
                token=created["uploadToken"],
                frame_bytes=BITRATE,
                after_frame=sample,
                frame_interval=1.0 / args.speed if args.speed else 0.0,
            )
            elapsed = time.perf_counter() - started
            end_web, end_storage = rss(web), rss(storage)
            assert result.committed == len(data)
            print(f"\n{'media s':>8} {'web RSS MiB':>12} {'storage RSS MiB':>16}")
            for offset, web_rss, storage_rss in samples:
                print(f"{offset // BITRATE:>8} {web_rss / MiB:>12.1f} {storage_rss / MiB:>16.1f}")
            print(f"{seconds:>8} {end_web / MiB:>12.1f} {end_storage / MiB:>16.1f}")
            growth = (end_web - base_web) / MiB
            print(
                f"\nstreamed {len(data) / MiB:.0f} MiB in {elapsed:.1f} s "
                f"({len(data) / MiB / elapsed:.1f} MiB/s, {seconds / elapsed:.0f}x real time)"
            )
            print(
                f"summary: ingest RSS {base_web / MiB:.1f} -> {end_web / MiB:.1f} MiB "
                f"(growth {growth:+.2f} MiB, target < 1 MiB: {'met' if growth < 1 else 'MISSED'}); "
                f"storage {base_storage / MiB:.1f} -> {end_storage / MiB:.1f} MiB"
            )
        finally:
            stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
