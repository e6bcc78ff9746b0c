"""Ingest capacity: N concurrent 2.5 Mbit/s recordings in 1 s frames over WebSocket, against
Tapedeck (ingest + storage processes, as `tapedeck up` runs them) and, in the same run, a bare
WebSocket sink (one `websockets` process: append, fdatasync, ack) — the machine's ceiling.

For each N: ack latency p50/p99/max (send of a frame → the first ack covering it), overall
and in the steady state (without each stream's first 5 frames and its last), bytes
lost (every stored file is read back and compared frame by frame; must be 0), mean CPU and
peak RSS of each server process (psutil), client errors.

The reconnect storm (`--storm`): N streams, half of them holding one committed frame from an
earlier connection, all connect, send `start` and their first frame within one second (as when
an ingest pod restarts and every client reconnects at once), then go on at 2.5 Mbit/s; the
figure is the overall p99 ack (first frames included), with connect → `ready` beside it.

Then saturation: `--sat-streams` streams send back to back (a window of 2 frames each) for
`--sat-seconds`: the sustained throughput of each server; the summary gives Tapedeck's as a
ratio of the bare sink's.

    python bench/ingest_load.py                                  # quick: 20 s per level
    python bench/ingest_load.py --seconds 60 --streams 100 200 300 400   # the full run
    python bench/ingest_load.py --streams --storm 300 --sat-seconds 0      # the storm alone
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _load import FRAME_BYTES, StreamResult, Target, check_file, run_clients

from _common import ROOT, UNLIMITED, Sampler, harness, percentile, table, wait_until

MiB = 1024 * 1024
WARMUP = 5


@dataclass
class Level:
    server: str
    streams: int
    results: list[StreamResult]
    seconds: float
    lost: int
    usage: dict[str, tuple[float, float]]  # process → (mean CPU %, peak RSS MiB)
    mode: str = "paced"

    @property
    def ready(self) -> list[float]:
        return [r.ready for r in self.results if r.ready]

    @property
    def latencies(self) -> list[float]:
        return [x for r in self.results for x in r.latencies]

    @property
    def steady(self) -> list[float]:
        """Without each stream's first `WARMUP` frames and its last one: the steady state,
        not the storm of every recording opening (and finishing) within the same seconds."""
        return [x for r in self.results for x in r.latencies[WARMUP:-1]]

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r.error)

    @property
    def committed(self) -> int:
        return sum(r.committed for r in self.results)

    @property
    def throughput(self) -> float:
        """MiB/s durably acknowledged over the sending time."""
        return self.committed / MiB / self.seconds


class Server:
    name = ""

    def start(self, tmp: Path) -> None: ...
    def targets(self, n: int) -> list[Target]: ...
    def pids(self) -> dict[str, int]: ...
    def stored(self, target: Target) -> Path: ...
    def stop(self) -> None: ...


class Sink(Server):
    name = "bare sink"

    def start(self, tmp: Path) -> None:
        self.dir = tmp / "sink"
        self.dir.mkdir()
        self.port = harness.free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "_load.py"),
                "sink",
                str(self.dir),
                str(self.port),
            ]
        )
        wait_until(lambda: _connectable(self.port), 20, "sink listening")

    def targets(self, n: int) -> list[Target]:
        return [
            Target(f"ws://127.0.0.1:{self.port}/ws/video?session=s{i:05d}", i) for i in range(n)
        ]

    def pids(self) -> dict[str, int]:
        return {"sink": self.proc.pid}

    def stored(self, target: Target) -> Path:
        return self.dir / f"s{target.stream:05d}.bin"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Tapedeck(Server):
    name = "Tapedeck"

    def __init__(self, ingest_processes: int = 1) -> None:
        self.ingest_processes = ingest_processes
        """1: the web process alone; more: `tapedeck serve ingest` processes beside it, in
        front of the same storage, each taking every n-th stream."""
        if ingest_processes > 1:
            self.name = f"Tapedeck, {ingest_processes} ingest"

    def make_stack(self, tmp: Path) -> harness.Stack:
        return harness.make_stack(tmp, **UNLIMITED)

    def start(self, tmp: Path) -> None:
        self.stack = self.make_stack(tmp).start()
        self.ws_bases = [self.stack.ws_base]
        for k in range(1, self.ingest_processes):
            port = harness.free_port()
            env = {**self.stack.env, "TAPEDECK_PORT": str(port)}
            service = harness.Service(["serve", "ingest"], env, tmp / f"ingest-{k + 1}.log")
            service.start()
            self.stack.extra.append(service)
            wait_until(lambda p=port: _connectable(p), 60, f"ingest {k} listening")
            self.ws_bases.append(f"ws://127.0.0.1:{port}")
        self.sessions: dict[int, str] = {}

    def targets(self, n: int) -> list[Target]:
        targets = []
        with httpx.Client(base_url=self.stack.base_url, timeout=30) as api:
            for i in range(n):
                created = api.post("/api/sessions").json()
                self.sessions[i] = created["id"]
                base = self.ws_bases[i % len(self.ws_bases)]
                targets.append(
                    Target(
                        f"{base}/ws/video?session={created['id']}&token={created['uploadToken']}",
                        i,
                    )
                )
        return targets

    def pids(self) -> dict[str, int]:
        assert self.stack.web.process and self.stack.storage.process
        pids = {"ingest+api": self.stack.web.process.pid, "storage": self.stack.storage.process.pid}
        for service in self.stack.extra:  # "ingest 2", "storage 2", ... by their logs
            assert service.process
            pids[service.log.stem.replace("-", " ")] = service.process.pid
        return pids

    def stored(self, target: Target) -> Path:
        return self.stack.data_dir / self.sessions[target.stream] / "video.webm"

    def stop(self) -> None:
        self.stack.stop()


def _connectable(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def run_level(
    server: Server, n: int, mode: str, seconds: float, processes: int, window: int
) -> Level:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server.start(tmp)
        try:
            targets = server.targets(n)
            if mode == "storm":  # half the streams resume: one frame committed, unfinished
                run_clients(targets[1::2], "prefill", 1, processes, 1)
            sampler: Sampler | None = None

            def started(_pids: list[int], start_at: float) -> None:
                nonlocal sampler
                # The steady state; the storm from its first second.
                time.sleep(max(0.0, start_at - time.time() + (mode != "storm")))
                sampler = Sampler(server.pids()).__enter__()

            began = time.perf_counter()
            results = run_clients(targets, mode, seconds, processes, window, started)
            elapsed = time.perf_counter() - began
            assert sampler is not None
            sampler.__exit__()
            if mode in ("paced", "storm"):
                lost = sum(check_file(server.stored(t), t.stream, int(seconds)) for t in targets)
            else:
                lost = sum(
                    check_file(server.stored(t), t.stream, r.frames) + (r.sent - r.committed)
                    for t, r in zip(targets, results, strict=True)
                )
            usage = {name: (u.cpu, u.rss_max / MiB) for name, u in sampler.usage.items()}
        finally:
            server.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    duration = seconds if mode == "saturate" else min(elapsed, seconds)
    kinds: dict[str, int] = {}
    for r in results:
        if r.error:
            kinds[r.error[:120]] = kinds.get(r.error[:120], 0) + 1
    for error, count in sorted(kinds.items(), key=lambda kv: -kv[1])[:3]:
        print(f"  {server.name}: {count} streams failed: {error}", file=sys.stderr, flush=True)
    return Level(server.name, n, results, duration, lost, usage, mode)


def as_json(level: Level) -> dict[str, object]:
    """One level for bench/report.py's charts (latencies in ms)."""
    return {
        "server": level.server,
        "mode": level.mode,
        "streams": level.streams,
        "mib_s": level.throughput,
        "p50_ms": percentile(level.latencies, 0.5) * 1000,
        "p99_ms": percentile(level.latencies, 0.99) * 1000,
        "steady_p99_ms": percentile(level.steady, 0.99) * 1000,
        "ready_p99_ms": percentile(level.ready, 0.99) * 1000,
        "max_ms": max(level.latencies, default=0) * 1000,
        "lost": level.lost,
        "errors": level.errors,
        "usage": {k: {"cpu": c, "rss_mib": r} for k, (c, r) in level.usage.items()},
    }


def row(level: Level) -> list[object]:
    lat = level.latencies
    steady = level.steady
    usage = ", ".join(f"{k} {c:.0f}% / {r:.0f} MiB" for k, (c, r) in level.usage.items())
    return [
        level.server,
        level.streams,
        f"{level.throughput:.1f}",
        f"{percentile(lat, 0.5) * 1000:.1f}",
        f"{percentile(lat, 0.99) * 1000:.1f}",
        f"{percentile(steady, 0.5) * 1000:.1f}",
        f"{percentile(steady, 0.99) * 1000:.1f}",
        f"{max(lat, default=0) * 1000:.0f}",
        level.lost,
        level.errors,
        usage,
    ]


STORM_HEADERS = [
    "server", "streams", "resumed", "connect→ready p50 ms", "connect→ready p99 ms",
    "ack p50 ms", "ack p99 ms", "steady p99 ms", "ack max ms", "bytes lost", "stream errors",
    "CPU (mean, % of a core) / peak RSS",
]  # fmt: skip


def storm_row(level: Level) -> list[object]:
    lat = level.latencies
    usage = ", ".join(f"{k} {c:.0f}% / {r:.0f} MiB" for k, (c, r) in level.usage.items())
    return [
        level.server,
        level.streams,
        level.streams // 2,
        f"{percentile(level.ready, 0.5) * 1000:.1f}",
        f"{percentile(level.ready, 0.99) * 1000:.1f}",
        f"{percentile(lat, 0.5) * 1000:.1f}",
        f"{percentile(lat, 0.99) * 1000:.1f}",
        f"{percentile(level.steady, 0.99) * 1000:.1f}",
        f"{max(lat, default=0) * 1000:.0f}",
        level.lost,
        level.errors,
        usage,
    ]


HEADERS = [
    "server", "streams", "MiB/s acked", "ack p50 ms", "ack p99 ms", "steady p50 ms",
    "steady p99 ms", "ack max ms",
    "bytes lost", "stream errors", "CPU (mean, % of a core) / peak RSS",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, nargs="*", default=[50, 150, 300])
    parser.add_argument("--seconds", type=float, default=20, help="per level (full run: 60)")
    parser.add_argument("--processes", type=int, default=2, help="load client processes")
    parser.add_argument("--storm", type=int, nargs="*", default=[300], help="reconnect storms")
    parser.add_argument("--storm-seconds", type=float, default=15)
    parser.add_argument("--sat-streams", type=int, default=32)
    parser.add_argument("--sat-seconds", type=float, default=20, help="0: no saturation part")
    parser.add_argument(
        "--scale", type=int, nargs="*", default=[], help="ingest processes in front of storage"
    )
    parser.add_argument("--scale-streams", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the levels here (bench/report.py)")
    args = parser.parse_args()
    paced: list[Level] = []
    for n in args.streams:
        for server in (Sink(), Tapedeck()):
            print(
                f"{server.name}: {n} streams x {args.seconds:g} s ...", file=sys.stderr, flush=True
            )
            paced.append(run_level(server, n, "paced", args.seconds, args.processes, 2))
    storms: list[Level] = []
    for n in args.storm:
        for server in (Sink(), Tapedeck()):
            print(f"{server.name}: storm of {n} ...", file=sys.stderr, flush=True)
            storms.append(run_level(server, n, "storm", args.storm_seconds, args.processes, 2))
    scaled: list[Level] = []
    for processes in args.scale:
        print(f"Tapedeck: {processes} ingest processes ...", file=sys.stderr, flush=True)
        scaled.append(
            run_level(
                Tapedeck(processes), args.scale_streams, "paced", args.seconds, args.processes, 2
            )
        )
    sat: list[Level] = []
    for server in (Sink(), Tapedeck()) if args.sat_seconds else ():
        print(f"{server.name}: saturation ...", file=sys.stderr, flush=True)
        sat.append(
            run_level(server, args.sat_streams, "saturate", args.sat_seconds, args.processes, 2)
        )
    if paced:
        print(
            f"### Paced: N recordings at 2.5 Mbit/s in 1 s frames ({FRAME_BYTES} B), "
            f"{args.seconds:g} s each\n"
        )
        print(table(HEADERS, [row(level) for level in paced]))
    if storms:
        print(
            f"\n### Reconnect storm: N streams connect, `start` and send their first frame "
            f"within 1 s (half resuming from `committed`), then 2.5 Mbit/s for "
            f"{args.storm_seconds:g} s\n"
        )
        print(table(STORM_HEADERS, [storm_row(level) for level in storms]))
    if scaled:
        print(
            f"\n### Replicas: {args.scale_streams} paced streams through N ingest processes "
            f"in front of one storage, {args.seconds:g} s\n"
        )
        print(table(HEADERS, [row(level) for level in scaled]))
    if sat:
        print(
            f"\n### Saturation: {args.sat_streams} streams sending back to back "
            f"(2 frames in flight each), {args.sat_seconds:g} s\n"
        )
        print(table(HEADERS, [row(level) for level in sat]))
    print(f"\nload average (1, 5, 15 min) at the end: {_load_average()}")
    if args.json:
        args.json.write_text(
            json.dumps([as_json(level) for level in (*paced, *storms, *scaled, *sat)], indent=1)
        )
    print(f"\nsummary: {summary(paced, storms, sat, scaled)}")


def _load_average() -> str:
    import os

    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def summary(paced: list[Level], storms: list[Level], sat: list[Level], scaled: list[Level]) -> str:
    parts = []
    if paced:
        parts.append(paced_summary(paced))
    for sink, ours in zip(storms[::2], storms[1::2], strict=True):
        p99 = percentile(ours.latencies, 0.99) * 1000
        parts.append(
            f"reconnect storm of {ours.streams} (all connect, start and send within 1 s, half "
            f"resuming): overall p99 ack {p99:.0f} ms (target <= 250 ms: "
            f"{'met' if p99 <= 250 and ours.lost == 0 and ours.errors == 0 else 'MISSED'}), "
            f"bare sink {percentile(sink.latencies, 0.99) * 1000:.0f} ms; connect→ready p99 "
            f"{percentile(ours.ready, 0.99) * 1000:.0f} ms; {ours.lost} B lost, "
            f"{ours.errors} stream errors"
        )
    if scaled:
        parts.append(scale_summary(scaled))
    if sat:
        ratio = sat[1].throughput / sat[0].throughput if sat[0].throughput else 0.0
        parts.append(
            f"sustained throughput {sat[1].throughput:.0f} MiB/s vs bare sink "
            f"{sat[0].throughput:.0f} MiB/s = {ratio:.0%} of the baseline (target >= 60%)"
        )
    return "; ".join(parts)


def scale_summary(scaled: list[Level]) -> str:
    """Per ingest process: its CPU, storage's, and the streams at which storage (one process,
    one core at most: the GIL) would be saturated at this run's cost per stream."""
    figures = []
    for lv in scaled:
        ingest = sum(c for name, (c, _) in lv.usage.items() if name.startswith("ingest"))
        storage = lv.usage.get("storage", (0.0, 0.0))[0]
        wall = lv.streams * 100 / storage if storage else 0
        figures.append(
            f"{len(lv.usage) - 1} ingest: p99 {percentile(lv.latencies, 0.99) * 1000:.0f} ms "
            f"(steady {percentile(lv.steady, 0.99) * 1000:.0f}), ingest CPU {ingest:.0f}% in "
            f"all, storage {storage:.0f}% (one core at ~{wall:.0f} streams), {lv.lost} B lost"
        )
    return f"{scaled[0].streams} streams through N ingest processes: " + "; ".join(figures)


def paced_summary(paced: list[Level]) -> str:
    def held(lv: Level, latencies: list[float]) -> bool:
        return lv.lost == 0 and lv.errors == 0 and percentile(latencies, 0.99) <= 0.25

    ours = [lv for lv in paced if lv.server == "Tapedeck"]
    best = max((lv.streams for lv in ours if held(lv, lv.steady)), default=0)
    best_all = max((lv.streams for lv in ours if held(lv, lv.latencies)), default=0)
    top = ours[-1]
    return (
        f"Tapedeck held {best} concurrent 2.5 Mbit/s recordings with steady-state "
        f"p99 ack <= 250 ms and 0 bytes lost ({best_all} counting each stream's first "
        f"{WARMUP} frames and its last; at {top.streams}: steady p99 "
        f"{percentile(top.steady, 0.99) * 1000:.0f} ms, overall p99 "
        f"{percentile(top.latencies, 0.99) * 1000:.0f} ms, {top.lost} B lost)"
    )


if __name__ == "__main__":
    main()
