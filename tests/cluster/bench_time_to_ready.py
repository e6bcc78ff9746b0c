"""Cluster mode, stop → `Ready` (issue 18, target 4): a benchmark on the suite's real node.

Not collected by `make test-cluster` (its name does not start with `test_`): `make
bench-cluster` runs it, or `pytest -s tests/cluster/bench_time_to_ready.py` (with other
cluster test files in the same run, they share one node start). The chart is installed with
its defaults (plus the images). Per case a recording, H.264 video and Opus microphone as two
WebSockets into the ingest pod, is streamed at TAPEDECK_BENCH_SPEED (10) times real time in
1 s frames, TAPEDECK_BENCH_MINUTES (10) long (bench/_common.py's cached 2.5 Mbit/s fixtures):

- **followed**: the api makes the session (and its RecordingSession), so the operator starts
  a follower Job while it records; after the last frame `POST /api/compile-video`, and the
  time until the resource's `Ready` condition is `True` (read from the API server every
  20 ms) is the figure. The follower's processes (found on the host: the node's containers are
  this machine's processes) are sampled every second for CPU and RSS.
- **one-shot** (same run, same files; the path before followers, and the baseline): ingest
  makes the session (no resource: nobody follows it); after its last frame a RecordingSession
  with `compile: true` is created and the time to `Ready` taken the same way.

Both MP4s are downloaded and compared packet by packet; the figures are printed as a table
with the load average, and the test fails only if something did not work (no timing asserts).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from cluster.helpers import (
    api_token,
    create_recording_session,
    delete_namespace,
    pod_ip,
    pods,
    wait_until,
)
from cluster.node import RealNode, dump, install
from media import packet_digest
from tapedeck.ingest.uploader import upload_track

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
from _common import fixture, table

NS = "bench-ready"
RS = f"/apis/tapedeck.io/v1alpha1/namespaces/{NS}/recordingsessions"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
T0 = 1_760_000_000_000.0
MINUTES = float(os.environ.get("TAPEDECK_BENCH_MINUTES", "10"))
SPEED = float(os.environ.get("TAPEDECK_BENCH_SPEED", "10"))


@dataclass
class Case:
    mode: str
    seconds: float = 0.0
    stored: float = 0.0
    load: str = ""
    compile_jobs: int = 0
    follower_jobs: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_max: int = 0
    digest: str = ""
    log: list[str] = field(default_factory=list)


class FollowerSampler:
    """CPU seconds and RSS of `tapedeck follow ID` and its FFmpegs, from the host's /proc: the
    follower's own time plus its reaped children's, plus its live children's."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.cpu_s = 0.0
        self.rss_max = 0
        self.seen_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FollowerSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for proc in psutil.process_iter(["cmdline"]):
                cmd = proc.info.get("cmdline") or []
                if "follow" not in cmd or self.session_id not in cmd:
                    continue
                if self.seen_at is None:
                    self.seen_at = time.monotonic()
                try:
                    own = proc.cpu_times()
                    cpu = own.user + own.system + own.children_user + own.children_system
                    rss = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        times = child.cpu_times()
                        cpu += times.user + times.system
                        rss += child.memory_info().rss
                except psutil.Error:
                    continue
                self.cpu_s = max(self.cpu_s, cpu)
                self.rss_max = max(self.rss_max, rss)


class Release:
    def __init__(self, node: RealNode) -> None:
        self.node, self.cluster = node, node.cluster
        self.api = f"http://{pod_ip(self.cluster, NS, 'api')}:8080"
        self.ws = f"ws://{pod_ip(self.cluster, NS, 'ingest')}:8080"
        self.headers = {"Authorization": f"Bearer {api_token(self.cluster, NS)}"}

    def ready(self, name: str) -> bool:
        status, _ = self.cluster.raw("GET", f"{RS}/{name}")
        if status != 200:
            return False
        got = self.cluster.request("GET", f"{RS}/{name}").get("status") or {}
        assert got.get("phase") != "Failed", got
        return any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in got.get("conditions") or []
        )

    def time_to_ready(self, name: str, since: float, timeout: float = 600) -> tuple[float, float]:
        """Seconds from `since` to the `Ready` condition, and to storage's `ready` (the api's
        session state: what the compile itself took, before the operator mirrors it)."""
        deadline = time.monotonic() + timeout
        stored: float | None = None
        with httpx.Client(base_url=self.api, headers=self.headers, timeout=10) as api:
            while time.monotonic() < deadline:
                if stored is None and api.get(f"/api/sessions/{name}").json()["state"] == "ready":
                    stored = time.perf_counter() - since
                if self.ready(name):
                    ready = time.perf_counter() - since
                    return ready, stored if stored is not None else ready
                time.sleep(0.02)
        raise AssertionError(f"{name} not Ready after {timeout} s\n{dump(self.node, NS)}")

    def log_lines(self, selector: str, container: str, *needles: str) -> list[str]:
        lines = []
        for pod in pods(self.cluster, NS, selector):
            log = self.node.pod_log(NS, pod["metadata"]["name"], container)
            lines += [line for line in log.splitlines() if any(n in line for n in needles)]
        return lines

    def jobs_of(self, name: str, followers: bool) -> list[dict[str, Any]]:
        return [
            j
            for j in self.cluster.request("GET", JOBS)["items"]
            if any(o["name"] == name for o in j["metadata"].get("ownerReferences", []))
            and ("tapedeck.io/follower" in j["metadata"]["labels"]) == followers
        ]

    async def download(self, session_id: str, out: Path) -> str:
        async with httpx.AsyncClient(base_url=self.api, headers=self.headers, timeout=120) as api:
            reply = await api.get(f"/api/download/{session_id}")
            assert reply.status_code == 200, reply.text
            out.write_bytes(reply.content)
        return packet_digest(out)


async def followed(release: Release, video: Path, audio: Path, tmp: Path) -> Case:
    case = Case("followed (follower Job)")
    seconds = MINUTES * 60
    async with httpx.AsyncClient(base_url=release.api, headers=release.headers, timeout=60) as api:
        created = (await api.post("/api/sessions")).json()
        session_id = created["id"]

        async def send(track: str, path: Path, mime: str) -> None:
            data = path.read_bytes()
            await upload_track(
                release.ws,
                track,
                data,
                session_id=session_id,
                token=created["uploadToken"],
                mime_type=mime,
                started_at=T0,
                frame_bytes=max(1, len(data) // max(1, int(seconds))),
                frame_interval=1.0 / SPEED,
            )

        with FollowerSampler(session_id) as sampler:
            await asyncio.gather(
                send("video", video, "video/webm;codecs=h264"),
                send("audio", audio, "audio/webm;codecs=opus"),
            )
            stopped = time.perf_counter()
            reply = await api.post(f"/api/compile-video/{session_id}")
            assert reply.status_code == 202, reply.text
            case.seconds, case.stored = await asyncio.to_thread(
                release.time_to_ready, session_id, stopped
            )
            await asyncio.sleep(2)  # the follower's last samples (it exits after Ready)
        case.wall_s = time.monotonic() - (sampler.seen_at or time.monotonic())
        case.cpu_s = sampler.cpu_s
        case.rss_max = sampler.rss_max
    case.compile_jobs = len(release.jobs_of(session_id, followers=False))
    case.follower_jobs = len(release.jobs_of(session_id, followers=True))
    case.digest = await release.download(session_id, tmp / "followed.mp4")
    name = release.jobs_of(session_id, followers=True)[0]["metadata"]["name"]
    case.log = release.log_lines(
        f"job-name={name}", "follow", "compile requested", "compiling ", "compiled ", "published"
    )
    return case


async def one_shot(release: Release, video: Path, audio: Path, tmp: Path) -> Case:
    case = Case("one-shot (compile Job)")
    first = await upload_track(
        release.ws, "video", video.read_bytes(), started_at=T0, frame_bytes=256 * 1024
    )
    await upload_track(
        release.ws,
        "audio",
        audio.read_bytes(),
        session_id=first.session_id,
        token=first.upload_token,
        mime_type="audio/webm;codecs=opus",
        started_at=T0,
        frame_bytes=64 * 1024,
    )
    stopped = time.perf_counter()
    create_recording_session(release.cluster, NS, first.session_id, compile=True)
    case.seconds, case.stored = await asyncio.to_thread(
        release.time_to_ready, first.session_id, stopped
    )
    case.compile_jobs = len(release.jobs_of(first.session_id, followers=False))
    case.follower_jobs = len(release.jobs_of(first.session_id, followers=True))
    case.digest = await release.download(first.session_id, tmp / "one-shot.mp4")
    name = release.jobs_of(first.session_id, followers=False)[0]["metadata"]["name"]
    case.log = release.log_lines(f"job-name={name}", "compile", "compiling ", "compiled ")
    return case


@pytest.fixture(scope="module")
def release(real_node: RealNode) -> Iterator[Release]:
    try:
        out = install(real_node, NS)
        assert "STATUS: deployed" in out, out + dump(real_node, NS)
        wait_until(
            lambda: (
                "Ready" in str(pods(real_node.cluster, NS, "app.kubernetes.io/component=operator"))
            ),
            60,
            "the operator",
        )
        yield Release(real_node)
    finally:
        # Resources go while the operator runs: their finalizer cleans storage.
        real_node.cluster.raw("DELETE", RS)
        wait_until(
            lambda: not real_node.cluster.request("GET", RS)["items"],
            60,
            "the resources to go",
            0.5,
        )
        real_node.helm("uninstall", "tapedeck", f"--namespace={NS}", "--timeout=120s", check=False)
        delete_namespace(real_node.cluster, NS, timeout=120)


def test_stop_to_ready(
    release: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video, audio = fixture("h264", MINUTES * 60), fixture("opus", MINUTES * 60)
    cases = []
    for run in (followed, one_shot):
        before = os.getloadavg()
        case = asyncio.run(run(release, video, audio, tmp_path))
        after = os.getloadavg()
        case.load = f"{before[0]:.1f} → {after[0]:.1f}"
        cases.append(case)
    with capsys.disabled():
        print()
        print(
            table(
                ["compile", "recording", "streamed at", "stop → Ready s",
                 "stop → ready in storage s", "compile Jobs", "follower CPU s (% of a core)",
                 "follower RSS max MiB", "load (1 min)"],
                [
                    [c.mode, f"{MINUTES:g} min H.264 + Opus", f"{SPEED:g}x", f"{c.seconds:.2f}",
                     f"{c.stored:.2f}", c.compile_jobs,
                     f"{c.cpu_s:.1f} ({100 * c.cpu_s / c.wall_s:.1f} %)" if c.wall_s else "-",
                     f"{c.rss_max / 2**20:.0f}" if c.rss_max else "-", c.load]
                    for c in cases
                ],
            )
        )  # fmt: skip
        for c in cases:
            print(f"{c.mode}, the compile's own log:")
            for line in c.log:
                print(f"  {line[:400]}")
        same = cases[0].digest == cases[1].digest
        print(f"same packets in both MP4s: {'yes' if same else 'NO'}")
        print(
            f"summary: cluster stop → Ready, {MINUTES:g} min H.264 + Opus at {SPEED:g}x: "
            f"followed {cases[0].seconds:.2f} s, one-shot {cases[1].seconds:.2f} s"
        )
    followed_case, one_shot_case = cases
    assert followed_case.follower_jobs == 1 and followed_case.compile_jobs == 0
    assert one_shot_case.follower_jobs == 0 and one_shot_case.compile_jobs == 1
    assert followed_case.digest == one_shot_case.digest
