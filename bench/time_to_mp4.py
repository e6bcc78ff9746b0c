"""Time to MP4: from the client's `finish` to a downloadable file, through the real pipeline.

A recording (video + Opus microphone, as two WebSockets) is streamed at `--speed` times real
time in 1 s frames, as a browser's MediaRecorder hands them over; then `finish`,
`POST /api/compile-video`, poll until `ready` and `HEAD /api/download` answers 200: "finish →
MP4". H.264 video is a remux, VP8 a transcode. The poster, storyboard and HLS follow `ready`
(docs/decisions.md, "Ready first"): "finish → extras" is until the session lists the last of
them (the compile logs `compiled ID` once it made them all; the time is when the api first
listed the final set).

Baseline (same run, same files): the naive approach, one FFmpeg transcode of the whole
recording after stop: `ffmpeg -i video -i audio -c:v libx264 -c:a aac out.mp4`.

The downloaded MP4 is also checked against a one-shot compile of the same files
(`compile_files`, what `tapedeck compile` runs): same streams, same packets.

    python bench/time_to_mp4.py                      # 1 and 10-minute recordings, real time
    python bench/time_to_mp4.py --minutes 1 --speed 4   # quick
    python bench/time_to_mp4.py --minutes 1 10 60 --speed 1 1 4   # what `make bench` runs
    python bench/time_to_mp4.py --minutes 10 60 --speed 10 20 --kinds h264 --no-naive
        # issue 18 target 3: H.264 10 min (≤ 2 s) and 60 min (≤ 3 s), streamed fast

Each case also prints the machine's load average before streaming and after the MP4 (the
figures are only comparable on a quiet machine).

Streaming faster than real time leaves the compile-while-recording less time, never more, so
a sped-up run can only overstate the time to MP4 — as long as the background encode keeps up
(the VP8 transcode runs at about 5x real time on 2 cores; the table says the speed used).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from _common import fixture, harness, media, table
from media import packet_digest
from tapedeck.compiler.run import compile_files
from tapedeck.ingest.uploader import upload_track

T0 = 1_760_000_000_000.0


@dataclass
class Case:
    kind: str
    minutes: float
    speed: float
    load: str = ""
    tapedeck: float = 0.0
    extras: float = 0.0
    naive: float = 0.0
    identical: str = ""
    size: int = 0


EXTRAS_TIMEOUT = 600.0


def compile_ended(stack: harness.Stack, sid: str) -> bool:
    """The compile's last line (`compiled ID: ...`, after the extras) is in the web log."""
    return f" INFO compiled {sid}:" in stack.web.log.read_text(errors="replace")


async def stream_and_compile(
    stack: harness.Stack, video: Path, audio: Path, mime: str, seconds: float, speed: float
) -> tuple[float, float, bytes]:
    """Streams both tracks paced like a recorder, then times finish → downloadable MP4 and
    finish → the last extra listed."""
    last_frame: list[float] = []

    def pacing(path: Path) -> tuple[int, float]:
        size = path.stat().st_size
        return max(1, size // max(1, int(seconds))), 1.0 / speed if speed else 0.0

    async def mark(_ws: object, offset: int, *, total: int) -> None:
        if offset >= total:
            last_frame.append(time.perf_counter())

    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as api:
        created = (await api.post("/api/sessions")).json()
        sid = created["id"]
        uploads = []
        for track, path, track_mime in (
            (("video", video, mime)),
            ("audio", audio, "audio/webm;codecs=opus"),
        ):
            data = path.read_bytes()
            frame, interval = pacing(path)
            uploads.append(
                upload_track(
                    stack.ws_base,
                    track,
                    data,
                    session_id=sid,
                    token=created["uploadToken"],
                    mime_type=track_mime,
                    started_at=T0,
                    frame_bytes=frame,
                    frame_interval=interval,
                    after_frame=functools.partial(mark, total=len(data)),
                )
            )
        await asyncio.gather(*uploads)
        finished_at = max(last_frame)
        response = await api.post(f"/api/compile-video/{sid}")
        assert response.status_code == 202, response.text
        while True:
            detail = (await api.get(f"/api/sessions/{sid}")).json()
            if detail["state"] == "failed":
                raise RuntimeError(f"compile failed: {detail['error']}")
            if detail["state"] == "ready":
                head = await api.head(f"/api/download/{sid}")
                if head.status_code == 200:
                    elapsed = time.perf_counter() - finished_at
                    break
            await asyncio.sleep(0.02)
        media = detail["media"]
        listed_at = time.perf_counter()
        give_up = listed_at + EXTRAS_TIMEOUT
        ended = False
        while not ended and time.perf_counter() < give_up:
            ended = compile_ended(stack, sid)  # read before: the last poll then sees it all
            now = (await api.get(f"/api/sessions/{sid}")).json()["media"]
            if now != media:
                media, listed_at = now, time.perf_counter()
            if not ended:
                await asyncio.sleep(0.05)
        if not ended:
            raise RuntimeError(f"the compile of {sid} did not end within {EXTRAS_TIMEOUT:g} s")
        extras = listed_at - finished_at
        print(f"  extras listed: {', '.join(k for k, v in media.items() if v) or 'none'}")
        body = (await api.get(f"/api/download/{sid}")).content
        return elapsed, extras, body


def naive(video: Path, audio: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            media.ffmpeg_binary(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-i", str(video), "-i", str(audio), "-c:v", "libx264", "-c:a", "aac", str(out),
        ],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


async def one_shot(video: Path, audio: Path, out: Path) -> str:
    await compile_files(media.ffmpeg_binary(), [("video", video, T0), ("audio", audio, T0)], out)
    return packet_digest(out)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument(
        "--speed",
        type=float,
        nargs="+",
        default=[1.0],
        help="times real time (1: a browser); one value for all, or one per --minutes",
    )
    parser.add_argument("--kinds", nargs="+", default=["h264", "vp8"], choices=["h264", "vp8"])
    parser.add_argument("--no-check", action="store_true", help="skip the one-shot comparison")
    parser.add_argument("--json", type=Path, help="also write the cases here (bench/report.py)")

    parser.add_argument("--no-naive", action="store_true", help="skip the naive transcode")
    args = parser.parse_args()
    if len(args.speed) not in (1, len(args.minutes)):
        parser.error("--speed takes one value, or one per --minutes")
    speeds = args.speed * len(args.minutes) if len(args.speed) == 1 else args.speed
    cases: list[Case] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        stack = harness.make_stack(tmp, sessions_per_minute="0").start()
        try:
            for minutes, speed in zip(args.minutes, speeds, strict=True):
                seconds = minutes * 60
                audio = fixture("opus", seconds)
                for kind in args.kinds:
                    video = fixture(kind, seconds)
                    mime = f"video/webm;codecs={kind}"
                    print(
                        f"streaming {minutes:g} min of {kind} + opus at {speed:g}x ...",
                        flush=True,
                    )
                    case = Case(kind, minutes, speed)
                    before = os.getloadavg()[0]
                    case.tapedeck, case.extras, body = await stream_and_compile(
                        stack, video, audio, mime, seconds, speed
                    )
                    case.load = f"{before:.1f} → {os.getloadavg()[0]:.1f}"
                    compiled = [
                        line
                        for line in (tmp / "web.log").read_text(errors="replace").splitlines()
                        if " INFO compiled " in line
                    ]
                    if compiled:  # the compile's own phases (what the time after stop went to)
                        print(f"  {compiled[-1].partition(' INFO ')[2]}", flush=True)
                    case.size = len(body)
                    got = tmp / "got.mp4"
                    got.write_bytes(body)
                    if not args.no_check:
                        want = await one_shot(video, audio, tmp / "one-shot.mp4")
                        case.identical = "yes" if packet_digest(got) == want else "NO"
                    if not args.no_naive:
                        case.naive = naive(video, audio, tmp / "naive.mp4")
                    cases.append(case)
                    print(
                        f"  tapedeck {case.tapedeck:.2f} s (extras {case.extras:.2f} s), "
                        f"naive {case.naive:.1f} s, "
                        f"load {case.load}",
                        flush=True,
                    )
        finally:
            stack.stop()
    print()
    print(
        table(
            ["recording", "streamed at", "input", "Tapedeck finish→MP4 s",
             "finish→extras s", "naive transcode s",
             "speed-up", "MP4 MiB", "same packets as one-shot", "load (1 min)"],
            [
                [f"{c.minutes:g} min", f"{c.speed:g}x",
                 "H.264 (remux)" if c.kind == "h264" else "VP8 (transcode)",
                 f"{c.tapedeck:.2f}", f"{c.extras:.2f}", f"{c.naive:.1f}" if c.naive else "-",
                 f"{c.naive / c.tapedeck:.0f}x" if c.naive else "-",
                 f"{c.size / 2**20:.0f}", c.identical or "not checked", c.load]
                for c in cases
            ],
        )
    )  # fmt: skip
    parts = [
        f"{c.minutes:g} min {c.kind}: {c.tapedeck:.2f} s (extras {c.extras:.2f} s)"
        + (f" ({c.naive / c.tapedeck:.0f}x faster than naive)" if c.naive else "")
        for c in cases
    ]
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {"kind": c.kind, "minutes": c.minutes, "speed": c.speed,
                     "tapedeck_s": c.tapedeck, "extras_s": c.extras, "naive_s": c.naive}
                    for c in cases
                ],
                indent=1,
            )
        )  # fmt: skip
    print(f"\nsummary: time to MP4 after stop: {'; '.join(parts)}")


if __name__ == "__main__":
    asyncio.run(main())
