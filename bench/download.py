"""Download: `GET /api/download/{id}` of a 1 GiB MP4 against nginx serving the same file, in
the same run on the same machine.

The file (random bytes: what is served does not matter) is stored as a session's output
through `StorageClient.upload_output`, as a compile stores it; nginx (the Debian package,
started here on a free loopback port with a temporary config: sendfile, one worker per core)
serves the very file storage wrote, so both read the same page cache.

- Throughput: whole-file GETs with curl (a C client, so the client is not the bottleneck),
  best of `--repeat`.
- Range reads: `--ranges` reads of 64 KiB at random offsets over one keep-alive connection
  each (httpx), latency by offset: a Range read should cost the same wherever it starts.

    python bench/download.py [--size-mib 1024] [--repeat 3] [--ranges 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from _common import harness, percentile, table, wait_until
from tapedeck._proto import storage_pb2 as pb
from tapedeck.storage.client import StorageClient

MiB = 1024 * 1024
RANGE_BYTES = 64 * 1024
BINS = 8

NGINX_CONF = """
daemon off;
user root;
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{ video/mp4 mp4; }}
    server {{
        listen 127.0.0.1:{port};
        location = /file.mp4 {{ alias {file}; }}
    }}
}}
"""


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * MiB)
    with path.open("wb") as f:
        written = 0
        while written < size:
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n


async def store(stack: harness.Stack, source: Path) -> tuple[str, Path]:
    async with StorageClient(stack.storage_addr) as storage:
        session = await storage.create_session()
        begun = await storage.update_session(
            pb.UpdateSessionRequest(session_id=session.id, begin_compile=True)
        )
        await storage.upload_output(session.id, source, begun.compile_generation)
        await storage.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id,
                state=pb.SESSION_STATE_READY,
                output=pb.Output(duration_seconds=1.0, video_codec="h264", audio_codec="aac"),
            )
        )
    return session.id, stack.data_dir / session.id / f"{session.id}.mp4"


def curl_speed(url: str) -> float:
    """MiB/s of one whole-file GET."""
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{speed_download}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0] == "200", out
    return float(out[1]) / MiB


def range_latencies(url: str, size: int, n: int, seed: int = 1) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    samples = []
    with httpx.Client(timeout=30) as client:
        client.get(url, headers={"Range": "bytes=0-0"})  # connect outside the measurement
        for _ in range(n):
            start = rng.randrange(0, size - RANGE_BYTES)
            began = time.perf_counter()
            response = client.get(
                url, headers={"Range": f"bytes={start}-{start + RANGE_BYTES - 1}"}
            )
            elapsed = time.perf_counter() - began
            assert response.status_code == 206 and len(response.content) == RANGE_BYTES
            samples.append((start, elapsed))
    return samples


def by_offset(samples: list[tuple[int, float]], size: int) -> list[float]:
    """p50 latency (ms) per offset bin."""
    bins: list[list[float]] = [[] for _ in range(BINS)]
    for start, elapsed in samples:
        bins[min(BINS - 1, start * BINS // size)].append(elapsed)
    return [percentile(b, 0.5) * 1000 for b in bins]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ranges", type=int, default=400)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx not found: apt-get install -y nginx-light (or nginx)")
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        source = tmp / "source.mp4"
        make_file(source, size)
        stack = harness.make_stack(tmp).start()
        proc: subprocess.Popen[bytes] | None = None
        try:
            sid, stored = asyncio.run(store(stack, source))
            source.unlink()
            port = harness.free_port()
            prefix = tmp / "nginx"
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, file=stored))
            proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)])
            urls = {
                "nginx": f"http://127.0.0.1:{port}/file.mp4",
                "Tapedeck": f"{stack.base_url}/api/download/{sid}",
            }
            wait_until(lambda: _ok(urls["nginx"]), 20, "nginx up")
            curl_speed(urls["nginx"])  # warm the page cache
            speeds = {
                name: [curl_speed(url) for _ in range(args.repeat)] for name, url in urls.items()
            }
            ranges = {name: range_latencies(url, size, args.ranges) for name, url in urls.items()}
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
            stack.stop()
    best = {name: max(v) for name, v in speeds.items()}
    print(f"### Whole file: GET of {args.size_mib} MiB, curl, best of {args.repeat}\n")
    print(
        table(
            ["server", "MiB/s (best)", "MiB/s (each run)", "vs nginx"],
            [
                [name, f"{best[name]:.0f}", " ".join(f"{v:.0f}" for v in speeds[name]),
                 f"{best[name] / best['nginx']:.0%}"]
                for name in speeds
            ],
        )
    )  # fmt: skip
    print(
        f"\n### Range reads: {args.ranges} x {RANGE_BYTES // 1024} KiB at random offsets, "
        "keep-alive; p50 ms by where the range starts\n"
    )
    edges = [
        f"{i * args.size_mib // BINS}-{(i + 1) * args.size_mib // BINS} MiB" for i in range(BINS)
    ]
    rows = []
    for name, samples in ranges.items():
        lat = [e for _, e in samples]
        rows.append(
            [name, *(f"{v:.2f}" for v in by_offset(samples, size)),
             f"{percentile(lat, 0.5) * 1000:.2f}", f"{percentile(lat, 0.99) * 1000:.2f}"]
        )  # fmt: skip
    print(table(["server", *edges, "all p50", "all p99"], rows))
    tape = by_offset(ranges["Tapedeck"], size)
    spread = max(tape) / min(tape) if min(tape) > 0 else 0.0
    ratio = best["Tapedeck"] / best["nginx"]
    print(
        f"\nsummary: download {best['Tapedeck']:.0f} MiB/s vs nginx {best['nginx']:.0f} MiB/s = "
        f"{ratio:.0%} (target >= 70%); Range read p50 "
        f"{percentile([e for _, e in ranges['Tapedeck']], 0.5) * 1000:.1f} ms vs nginx "
        f"{percentile([e for _, e in ranges['nginx']], 0.5) * 1000:.1f} ms, slowest/fastest "
        f"offset bin {spread:.2f}x (1.0 = independent of offset)"
    )


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, headers={"Range": "bytes=0-0"}).status_code == 206
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
