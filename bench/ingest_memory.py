"""Ingest and storage memory: RSS per active stream, and RSS over one long stream.

1. Per stream: after a warm-up stream (every code path and the allocator's arenas warmed),
   the idle RSS of the web (ingest + api) and storage processes; then `--streams` concurrent
   2.5 Mbit/s recordings in 1 s frames from separate client processes, RSS sampled every
   second in their steady state; (median active RSS - idle RSS) / streams is the memory one
   more recording costs. Target: <= 256 KiB per stream beyond the idle baseline.
2. Long stream: `--minutes` of 2.5 Mbit/s media through one WebSocket, RSS as it goes. The
   baseline is the RSS after the warm-up. Target: flat (growth under 1 MiB).

    python bench/ingest_memory.py [--streams 200 --seconds 30] [--minutes 10] [--speed 10]
    python bench/ingest_memory.py --minutes 60 --speed 1     # the 60-minute, real-time run
    python bench/ingest_memory.py --streams 300 --minutes 0.1 --memray /tmp/m   # who holds it

`--memray DIR` runs both services under memray (native frames, aggregated) and prints, after
they stop, what was allocated at each one's high-water mark: where the bytes live, by call
site (the RSS figures are then memray's too, so do not quote them).

Frames of the long stream are paced at `speed` times real time (1 = as a browser sends them;
0 = unpaced, which measures the backpressure window rather than a recording).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from _load import Target, run_clients

from _common import UNLIMITED, Sampler, harness, table
from tapedeck.ingest.uploader import upload_track

BITRATE = 2_500_000 // 8  # bytes per second of media
MiB = 1024 * 1024
MEMRAY_SUMMARY = [sys.executable, "-m", "memray", "summary", "-s", "3", "-r", "12"]  # by own bytes


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


def per_stream(
    stack: harness.Stack, streams: int, seconds: float
) -> tuple[str, str, dict[str, object]]:
    """Idle vs active RSS of both processes; returns (table, summary, figures)."""
    assert stack.web.process and stack.storage.process
    pids = {"ingest+api": stack.web.process.pid, "storage": stack.storage.process.pid}
    idle = {name: rss(pid) for name, pid in pids.items()}
    targets = []
    with httpx.Client(base_url=stack.base_url, timeout=30) as api:
        for i in range(streams):
            created = api.post("/api/sessions").json()
            targets.append(
                Target(
                    f"{stack.ws_base}/ws/video?session={created['id']}&token={created['uploadToken']}",
                    i,
                )
            )
    sampler: Sampler | None = None

    def started(_pids: list[int], start_at: float) -> None:
        nonlocal sampler
        time.sleep(max(0.0, start_at - time.time() + 3))  # every stream has sent a few frames
        sampler = Sampler(pids).__enter__()

    results = run_clients(targets, "paced", seconds, 2, 2, started)
    assert sampler is not None
    sampler.__exit__()
    errors = sum(1 for r in results if r.error)
    after = {name: rss(pid) for name, pid in pids.items()}
    rows = []
    costs = {}
    for name in pids:
        samples = sorted(sampler.usage[name].rss)
        active = samples[len(samples) // 2] if samples else 0
        costs[name] = (active - idle[name]) / streams / 1024
        rows.append(
            [name, f"{idle[name] / MiB:.1f}", f"{active / MiB:.1f}", f"{after[name] / MiB:.1f}",
             f"{costs[name]:.0f}"]
        )  # fmt: skip
    text = table(
        ["process", "idle RSS MiB", f"RSS with {streams} streams MiB", "after they end MiB",
         "KiB per active stream"],
        rows,
    )  # fmt: skip
    worst = max(costs.values())
    summary = (
        f"{streams} active streams cost {costs['ingest+api']:.0f} KiB each in ingest and "
        f"{costs['storage']:.0f} KiB in storage (target <= 256 KiB: "
        f"{'met' if worst <= 256 else 'MISSED'}; {errors} stream errors)"
    )
    figures: dict[str, object] = {"streams": streams, "kib_per_stream": costs, "errors": errors}
    return text, summary, figures


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=200, help="concurrent streams (part 1)")
    parser.add_argument("--seconds", type=float, default=30, help="how long they stream")
    parser.add_argument("--minutes", type=float, default=10, help="the long stream (part 2)")
    parser.add_argument("--speed", type=float, default=10, help="times real time; 0: unpaced")
    parser.add_argument("--memray", type=Path, help="profile both services into this directory")
    parser.add_argument("--json", type=Path, help="also write the figures here (bench/report.py)")
    args = parser.parse_args()
    seconds = max(1, int(args.minutes * 60))
    with tempfile.TemporaryDirectory() as tmp:
        stack = harness.make_stack(Path(tmp), **UNLIMITED)
        if args.memray:
            args.memray.mkdir(parents=True, exist_ok=True)
            for name, service in (("web", stack.web), ("storage", stack.storage)):
                out = args.memray / f"{name}.bin"
                out.unlink(missing_ok=True)
                service.python_args = ["-m", "memray", "run", "--native", "--aggregate"]
                service.python_args += ["-q", "-o", str(out)]
        stack.start()
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
            print(f"### RSS per active stream: {args.streams} streams x {args.seconds:g} s\n")
            streams_table, streams_summary, per_stream_figures = per_stream(
                stack, args.streams, args.seconds
            )
            print(streams_table)
            with httpx.Client(base_url=stack.base_url) as api:
                created = api.post("/api/sessions").json()
            base_web, base_storage = rss(web), rss(storage)
            print(f"\n### RSS over one long stream: {args.minutes:g} min at {args.speed:g}x\n")
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
            rows = [
                [offset // BITRATE, f"{web_rss / MiB:.1f}", f"{storage_rss / MiB:.1f}"]
                for offset, web_rss, storage_rss in samples
            ]
            rows.append([seconds, f"{end_web / MiB:.1f}", f"{end_storage / MiB:.1f}"])
            print(table(["media s", "ingest+api RSS MiB", "storage RSS MiB"], rows))
            growth = (end_web - base_web) / MiB
            storage_growth = (end_storage - base_storage) / MiB
            print(
                f"\nstreamed {len(data) / MiB:.0f} MiB in {elapsed:.1f} s "
                f"({len(data) / MiB / elapsed:.1f} MiB/s, {seconds / elapsed:.0f}x real time)"
            )
            flat = growth < 1 and storage_growth < 1
            if args.json:
                args.json.write_text(
                    json.dumps(
                        {
                            "per_stream": per_stream_figures,
                            "long": {
                                "speed": args.speed,
                                "media_s": [o / BITRATE for o, _, _ in samples] + [seconds],
                                "ingest_mib": [w / MiB for _, w, _ in samples] + [end_web / MiB],
                                "storage_mib": [s / MiB for _, _, s in samples]
                                + [end_storage / MiB],
                            },
                        },
                        indent=1,
                    )
                )
            print(
                f"\nsummary: {streams_summary}; over {args.minutes:g} min of one stream ingest RSS "
                f"{base_web / MiB:.1f} -> {end_web / MiB:.1f} MiB ({growth:+.2f}), storage "
                f"{base_storage / MiB:.1f} -> {end_storage / MiB:.1f} MiB ({storage_growth:+.2f}): "
                f"{'flat' if flat else 'NOT flat'} (target: growth < 1 MiB)"
            )
        finally:
            for service in (stack.web, stack.storage) if args.memray else ():
                if service.process and service.process.poll() is None:
                    # memray writes its file as the process ends; uvicorn re-raises SIGTERM
                    # after its shutdown (killed before memray writes), SIGINT is an exception.
                    service.process.send_signal(signal.SIGINT)
                    service.process.wait(300)
            stack.stop()
        if args.memray:
            for name in ("web", "storage"):
                print(f"\n### memray: {name} at its high-water mark\n", flush=True)
                subprocess.run(
                    [*MEMRAY_SUMMARY, str(args.memray / f"{name}.bin")],
                    check=False,
                    env={**os.environ, "COLUMNS": "200"},
                )


if __name__ == "__main__":
    asyncio.run(main())
