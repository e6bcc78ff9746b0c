"""The object tier (TAPEDECK_S3_BUCKET) against its baselines, in one run, with one SeaweedFS
`weed mini` on loopback (tests/s3_fixtures.py; tests/s3/build-weed.sh builds the binary).

1. Download of an MP4 stored through storage (`StorageClient.upload_output`, as a compile
   stores it) with `TAPEDECK_S3_DOWNLOADS=redirect`: `GET /api/download/{id}` (the api's 307,
   then the presigned GET, `curl -L`) vs a direct presigned GET of the same object from the same
   store vs nginx serving the same file (bench/download.py's config), best of `--repeat`; the
   api's CPU seconds per download (psutil, the web process and its children).
2. Ingest capacity, tier on vs volume only: bench/ingest_load.py's paced levels (same method:
   2.5 Mbit/s in 1 s frames, steady-state p99 ack, every stored file read back).
3. Volume bytes while one recording streams (video + Opus, bench/time_to_mp4.py's streaming):
   the allocated blocks (st_blocks) of the data directory, sampled every 0.5 s, tier vs none.
4. Time to MP4 after stop, tier vs none (the same recording as 3.).

    python bench/s3_tier.py [--size-mib 1024] [--streams 100 200 300] [--seconds 60]
                            [--minutes 4] [--speed 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from _load import Target
from botocore.exceptions import ClientError
from download import NGINX_CONF, make_file, store
from ingest_load import HEADERS, Level, Tapedeck, row, run_level
from time_to_mp4 import stream_and_compile

from _common import UNLIMITED, fixture, harness, percentile, table, wait_until
from s3_fixtures import WeedServer, weed_binary  # tests/, on sys.path by _common
from tapedeck.storage.objectstore import output_key, track_key

MiB = 1024 * 1024
BUCKET = "bench-tier"
TARGET_P99 = 0.25


def tier_stack(tmp: Path, weed: WeedServer, **settings: str) -> harness.Stack:
    """A stack whose storage ships to `weed` (the AWS_* conventions plus TAPEDECK_S3_*)."""
    stack = harness.make_stack(tmp, s3_bucket=BUCKET, **settings)
    stack.env.update(weed.env())  # the services share this dict
    return stack


def curl(url: str, size: int, follow: bool = False) -> float:
    """MiB/s of one whole-file GET, redirects included (curl's time_total)."""
    out = subprocess.run(
        ["curl", "-s", *(["-L"] if follow else []), "-o", "/dev/null", "-w",
         "%{http_code} %{size_download} %{time_total} %{num_redirects}", url],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert out[0] == "200" and int(out[1]) == size, out
    assert not follow or out[3] == "1", f"expected one redirect: {out}"
    return size / MiB / float(out[2])


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        t = p.cpu_times()
        total += t.user + t.system
    return total


def download(weed: WeedServer, size_mib: int, repeat: int) -> tuple[str, str]:
    nginx = "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx not found: apt-get install -y nginx-light (or nginx)")
    size = size_mib * MiB
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        source = tmp / "source.mp4"
        make_file(source, size)
        stack = tier_stack(tmp, weed, s3_downloads="redirect").start()
        proc: subprocess.Popen[bytes] | None = None
        try:
            sid, _ = asyncio.run(store(stack, source))
            presigned = weed.client().generate_presigned_url(  # type: ignore[attr-defined]
                "get_object", Params={"Bucket": BUCKET, "Key": output_key(sid)}, ExpiresIn=3600
            )
            port = harness.free_port()
            prefix = tmp / "nginx"
            prefix.mkdir()
            conf = prefix / "nginx.conf"
            conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, file=source))
            proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf)])
            nginx_url = f"http://127.0.0.1:{port}/file.mp4"
            wait_until(lambda: _up(nginx_url), 20, "nginx up")
            api_url = f"{stack.base_url}/api/download/{sid}"
            assert stack.web.process is not None
            web_pid = stack.web.process.pid
            curl(nginx_url, size)  # page cache
            curl(presigned, size)  # the store's own cache, if any
            speeds: dict[str, list[float]] = {"Tapedeck (307 + presigned GET)": []}
            speeds["direct presigned GET"] = []
            speeds["nginx"] = []
            api_cpu: list[float] = []
            for _ in range(repeat):
                before = cpu_seconds(web_pid)
                speeds["Tapedeck (307 + presigned GET)"].append(curl(api_url, size, follow=True))
                api_cpu.append(cpu_seconds(web_pid) - before)
                speeds["direct presigned GET"].append(curl(presigned, size))
                speeds["nginx"].append(curl(nginx_url, size))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
            stack.stop()
    best = {name: max(v) for name, v in speeds.items()}
    tape, direct, ngx = best.values()
    out = [
        f"### 1. Download: GET of {size_mib} MiB, curl, best of {repeat} (interleaved)\n",
        table(
            ["path", "MiB/s (best)", "MiB/s (each run)", "vs direct GET", "vs nginx"],
            [
                [
                    name,
                    f"{best[name]:.0f}",
                    " ".join(f"{v:.0f}" for v in runs),
                    f"{best[name] / direct:.0%}",
                    f"{best[name] / ngx:.0%}",
                ]
                for name, runs in speeds.items()
            ],
        ),
        f"\napi CPU per download (web process + children, psutil): "
        f"{', '.join(f'{c * 1000:.0f} ms' for c in api_cpu)}",
    ]
    summary = (
        f"download {tape:.0f} MiB/s via the 307 = {tape / direct:.0%} of a direct presigned GET "
        f"({direct:.0f} MiB/s; target >= 90%), {tape / ngx:.0%} of nginx ({ngx:.0f} MiB/s), "
        f"api CPU {max(api_cpu) * 1000:.0f} ms per {size_mib} MiB download"
    )
    return "\n".join(out), summary


class Tiered(Tapedeck):
    name = "Tapedeck + S3 tier"

    def __init__(self, weed: WeedServer, storage_replicas: int = 1) -> None:
        super().__init__()
        self.weed = weed
        self.storage_replicas = storage_replicas
        """More than 1: storage replicas beside the stack's, sessions placed among them by
        the web process (TAPEDECK_STORAGE_ADDRS), every one shipping to the same bucket."""
        if storage_replicas > 1:
            self.name = f"{self.name}, {storage_replicas} storage"

    def make_stack(self, tmp: Path) -> harness.Stack:
        stack = tier_stack(tmp, self.weed, **UNLIMITED)
        if self.storage_replicas == 1:
            return stack
        addrs = [stack.storage_addr]
        addrs += [f"127.0.0.1:{harness.free_port()}" for _ in range(1, self.storage_replicas)]
        stack.env.update(  # storage's and web's (shared); the others get their own below
            TAPEDECK_STORAGE_ADDRS=",".join(addrs), TAPEDECK_STORAGE_REPLICA="0"
        )
        for i, addr in enumerate(addrs[1:], start=1):
            env = {
                **stack.env,
                "TAPEDECK_DATA_DIR": str(tmp / f"volume-{i}"),
                "TAPEDECK_STORAGE_ADDR": addr,
                "TAPEDECK_STORAGE_REPLICA": str(i),
            }
            replica = harness.Service(["serve", "storage"], env, tmp / f"storage-{i + 1}.log")
            replica.start()
            stack.extra.append(replica)
            harness.wait_for(
                lambda a=addr: harness.storage_healthy(a), 60, f"storage {i + 1} health"
            )
        return stack

    def start(self, tmp: Path) -> None:
        super().start(tmp)
        self.readback = tmp / "readback"
        self.readback.mkdir()

    def stored(self, target: Target) -> Path:
        """The completed object read back from the store: once shipped, the volume's file is
        punched whole. While the upload is not complete (not visible yet), the volume's file."""
        key = track_key(self.sessions[target.stream], "video")
        client = self.weed.client()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()  # type: ignore[attr-defined]
            except ClientError:
                time.sleep(0.5)
                continue
            path = self.readback / f"{target.stream}.bin"
            path.write_bytes(body)
            return path
        return super().stored(target)


def capacity(
    weed: WeedServer, streams: list[int], seconds: float, processes: int
) -> tuple[str, str]:
    levels: list[Level] = []
    for n in streams:
        for server in (Tapedeck(), Tiered(weed)):
            print(f"{server.name}: {n} streams x {seconds:g} s ...", file=sys.stderr, flush=True)
            levels.append(run_level(server, n, "paced", seconds, processes, 2))

    def held(lv: Level) -> bool:
        return lv.lost == 0 and lv.errors == 0 and percentile(lv.steady, 0.99) <= TARGET_P99

    plain = max((lv.streams for lv in levels if lv.server == "Tapedeck" and held(lv)), default=0)
    tier = max((lv.streams for lv in levels if lv.server != "Tapedeck" and held(lv)), default=0)
    top = levels[-2:]
    out = "\n".join(
        [
            f"\n### 2. Ingest capacity: N recordings at 2.5 Mbit/s, {seconds:g} s each, "
            "volume only vs S3 tier (bench/ingest_load.py's paced levels)\n",
            table(HEADERS, [row(lv) for lv in levels]),
        ]
    )
    ratio = tier / plain if plain else 0.0
    summary = (
        f"ingest held {tier} streams with the tier vs {plain} volume only = {ratio:.0%} "
        f"(target >= 90%; steady p99 <= 250 ms, 0 B lost; levels {streams}, {seconds:g} s); "
        f"at {top[0].streams}: steady p99 {percentile(top[1].steady, 0.99) * 1000:.0f} ms "
        f"with the tier vs {percentile(top[0].steady, 0.99) * 1000:.0f} ms"
    )
    return out, summary


def replicas(
    weed: WeedServer, streams: int, seconds: float, counts: list[int], processes: int
) -> tuple[str, str]:
    """Issue 18 target 5: the same paced load through 1, 2, ... storage replicas (each on its
    own volume, all shipping to the one bucket) behind one web process."""
    levels: list[Level] = []
    for count in counts:
        server = Tiered(weed, storage_replicas=count)
        print(f"{server.name}: {streams} streams x {seconds:g} s ...", file=sys.stderr, flush=True)
        levels.append(run_level(server, streams, "paced", seconds, processes, 2))
    out = "\n".join(
        [
            f"\n### 5. Storage replicas: {streams} recordings at 2.5 Mbit/s, {seconds:g} s, "
            "through 1..N storage processes with the tier\n",
            table(HEADERS, [row(lv) for lv in levels]),
        ]
    )
    summary = "; ".join(
        f"{count} storage: p99 {percentile(lv.steady, 0.99) * 1000:.0f} ms steady, "
        f"{lv.lost} B lost, {lv.errors} errors"
        for count, lv in zip(counts, levels, strict=True)
    )
    return out, f"{streams} streams through storage replicas: {summary}"


def allocated(root: Path) -> tuple[int, int]:
    """Bytes the files under `root` occupy on disk (punched holes do not count): the tracks
    (`*.webm`), and everything else (the compile's MP4 above all)."""
    tracks = other = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                used = os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except FileNotFoundError:
                continue
            if name.endswith(".webm"):
                tracks += used
            else:
                other += used
    return tracks, other


def sample_blocks(root: Path, done: threading.Event, samples: list[tuple[int, int]]) -> None:
    while not done.wait(0.5):
        samples.append(allocated(root))


def recording(weed: WeedServer, minutes: float, speed: float) -> tuple[str, str]:
    seconds = minutes * 60
    video, audio = fixture("h264", seconds), fixture("opus", seconds)
    sent = video.stat().st_size + audio.stat().st_size
    result: dict[str, tuple[list[tuple[int, int]], float]] = {}
    for name in ("volume only", "S3 tier"):
        print(f"{name}: {minutes:g} min at {speed:g}x ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            if name == "S3 tier":
                stack = tier_stack(tmp, weed, sessions_per_minute="0")
            else:
                stack = harness.make_stack(tmp, sessions_per_minute="0")
            stack.start()
            samples: list[tuple[int, int]] = []
            done = threading.Event()
            sampler = threading.Thread(
                target=sample_blocks, args=(stack.data_dir, done, samples), daemon=True
            )
            sampler.start()
            try:
                elapsed, _extras, body = asyncio.run(
                    stream_and_compile(
                        stack, video, audio, "video/webm;codecs=h264", seconds, speed
                    )
                )
                assert len(body) > 0
            finally:
                done.set()
                sampler.join()
                stack.stop()
            result[name] = (samples, elapsed)
    rows = []
    peaks: dict[str, tuple[float, float, float]] = {}
    for name, (samples, elapsed) in result.items():
        tracks = max((t for t, _ in samples), default=0) / MiB
        other = max((o for _, o in samples), default=0) / MiB
        total = max((t + o for t, o in samples), default=0) / MiB
        peaks[name] = (tracks, other, total)
        end = sum(samples[-1]) / MiB if samples else 0.0
        rows.append(
            [name, f"{tracks:.1f}", f"{other:.1f}", f"{total:.1f}", f"{end:.1f}", f"{elapsed:.2f}"]
        )
    out = "\n".join(
        [
            f"\n### 3-4. One recording, {minutes:g} min of H.264 + Opus "
            f"({sent / MiB:.0f} MiB sent) at {speed:g}x: volume blocks and time to MP4\n",
            table(
                [
                    "storage",
                    "track files MiB (peak)",
                    "other files MiB (peak: the MP4)",
                    "volume MiB (peak)",
                    "volume MiB at the end",
                    "finish→MP4 s",
                ],
                rows,
            ),
        ]
    )
    plain, tier = peaks["volume only"], peaks["S3 tier"]
    summary = (
        f"one {minutes:g}-min recording ({sent / MiB:.0f} MiB): track files on the volume peak at "
        f"{tier[0]:.0f} MiB with the tier vs {plain[0]:.0f} MiB without (volume in all "
        f"{tier[2]:.0f} vs {plain[2]:.0f} MiB, the compile's MP4 included); time to MP4 "
        f"{result['S3 tier'][1]:.2f} s with the tier vs {result['volume only'][1]:.2f} s"
    )
    return out, summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 200, 300])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=4)
    parser.add_argument("--speed", type=float, default=4)
    parser.add_argument("--storage-replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--replica-streams", type=int, default=300)
    parser.add_argument(
        "--parts", nargs="+", default=["download", "recording", "capacity", "replicas"]
    )
    args = parser.parse_args()
    binary = weed_binary()
    if binary is None:
        sys.exit("no SeaweedFS binary: run tests/s3/build-weed.sh")
    outputs: list[str] = []
    summaries: list[str] = []
    with tempfile.TemporaryDirectory() as weed_dir:
        weed = WeedServer(binary, Path(weed_dir))
        weed.start()
        try:
            weed.create_bucket(BUCKET)
            for part in args.parts:
                if part == "download":
                    out, summary = download(weed, args.size_mib, args.repeat)
                elif part == "recording":
                    out, summary = recording(weed, args.minutes, args.speed)
                elif part == "capacity":
                    out, summary = capacity(weed, args.streams, args.seconds, args.processes)
                else:
                    out, summary = replicas(
                        weed,
                        args.replica_streams,
                        args.seconds,
                        args.storage_replicas,
                        args.processes,
                    )
                print(out, flush=True)
                outputs.append(out)
                summaries.append(summary)
        finally:
            weed.stop()
    print(f"\nload average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"\nsummary: {'; '.join(summaries)}")


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, headers={"Range": "bytes=0-0"}).status_code == 206
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
