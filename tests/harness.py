"""Real Tapedeck processes on loopback for tests: start, wait until healthy, kill, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: object, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def storage_healthy(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=1
        )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Service:
    """One `tapedeck` child process with its environment, restartable after a kill."""

    args: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    python_args: list[str] = field(default_factory=list)
    """Before `-m tapedeck`: a profiler's (`-m memray run ...`) for the benchmarks."""

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, *self.python_args, "-m", "tapedeck", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Stack:
    """Storage and the web process (api + ingest), as `tapedeck up` runs them."""

    data_dir: Path
    env: dict[str, str]
    port: int
    storage_addr: str
    storage: Service
    web: Service
    extra: list[Service] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Stack:
        self.start_storage()
        self.start_web()
        return self

    def start_web(self) -> None:
        """Returns once the web process answers: it cleans up before it listens."""
        self.web.start()
        wait_for(lambda: httpx.get(f"{self.base_url}/readyz").status_code == 200, 60, "web /readyz")

    def start_storage(self) -> None:
        self.storage.start()
        wait_for(lambda: storage_healthy(self.storage_addr), what="storage health")

    def stop(self) -> None:
        for service in (self.web, self.storage, *self.extra):
            service.stop()

    def logs(self) -> str:
        return "\n".join(
            s.log.read_text(errors="replace")[-4000:]
            for s in (self.storage, self.web)
            if s.log.exists()
        )


def make_stack(tmp: Path, **settings: str) -> Stack:
    port, storage_addr = free_port(), f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TAPEDECK_DATA_DIR": str(tmp / "recordings"),
        "TAPEDECK_STORAGE_ADDR": storage_addr,
        "TAPEDECK_PORT": str(port),
        "TAPEDECK_HOST": "127.0.0.1",
        "TAPEDECK_SWEEP_INTERVAL": "1s",
        **{f"TAPEDECK_{k.upper()}": v for k, v in settings.items()},
    }
    return Stack(
        data_dir=tmp / "recordings",
        env=env,
        port=port,
        storage_addr=storage_addr,
        storage=Service(["serve", "storage"], env, tmp / "storage.log"),
        web=Service(["serve", "web"], env, tmp / "web.log"),
    )


@dataclass
class Up:
    """`tapedeck up` as a user runs it, with a way to SIGKILL one of its children."""

    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_base(self) -> str:
        return self.url.replace("http://", "ws://")

    def child(self, role: str) -> int:
        import psutil

        for proc in psutil.Process(self.process.pid).children(recursive=True):
            if proc.cmdline()[-2:] == ["serve", role]:
                return int(proc.pid)
        raise AssertionError(f"`up` has no {role} child")

    def kill_child(self, role: str) -> int:
        """SIGKILL a child (storage or web); `up` restarts it. Returns the killed pid."""
        pid = self.child(role)
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_up(tmp: Path, **settings: str) -> Up:
    port = free_port()
    data_dir = tmp / "recordings"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEDECK_")}
    env.update({f"TAPEDECK_{k.upper()}": v for k, v in settings.items()})
    log = tmp / "up.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tapedeck",
                "up",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    up = Up(f"http://127.0.0.1:{port}", data_dir, process, log)
    try:
        wait_for(lambda: httpx.get(f"{up.url}/readyz").status_code == 200, 30, "tapedeck up")
    except TimeoutError:
        up.stop()
        raise
    return up


# --- recording and compiling through the real services -----------------------------------

T0 = 1_760_000_000_000.0  # a browser's epoch-ms `startedAt`


async def record_session(
    ws_base: str,
    api: httpx.Client,
    video: Path | None = None,
    audio: Path | None = None,
    *,
    video_mime: str = "video/webm;codecs=h264",
    frames_per_file: int = 4,
) -> str:
    """Create a session and stream the given files as its tracks, concurrently, the way
    MediaRecorder sends them (about one frame per second of media)."""
    import asyncio

    from tapedeck.ingest.uploader import upload_track

    created = api.post("/api/sessions").json()
    tracks = [("video", video, video_mime), ("audio", audio, "audio/webm;codecs=opus")]
    await asyncio.gather(
        *(
            upload_track(
                ws_base,
                name,
                path.read_bytes(),
                session_id=created["id"],
                token=created["uploadToken"],
                mime_type=mime,
                started_at=T0,
                frame_bytes=max(1024, path.stat().st_size // frames_per_file),
            )
            for name, path, mime in tracks
            if path is not None
        )
    )
    return str(created["id"])


def wait_extras(
    api: httpx.Client,
    session_id: str,
    keys: tuple[str, ...] = ("posterUrl", "storyboardUrl", "hlsUrl"),
    timeout: float = 120,
) -> dict[str, Any]:
    """Poll a `ready` session until its `media` lists every one of `keys`: the extras follow
    `ready` (docs/decisions.md, "Ready first"). Returns that detail."""
    deadline = time.monotonic() + timeout
    while True:
        detail: dict[str, Any] = api.get(f"/api/sessions/{session_id}").json()
        assert detail["state"] == "ready", detail
        if all(detail["media"][key] for key in keys):
            return detail
        if time.monotonic() > deadline:
            raise TimeoutError(f"{session_id} has not all of {keys}: {detail['media']}")
        time.sleep(0.1)


def wait_settled(api: httpx.Client, session_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Poll a session until `ready` or `failed`; returns every detail seen (the last is the
    outcome). Tolerates the api restarting meanwhile."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            seen.append(api.get(f"/api/sessions/{session_id}").json())
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        if seen[-1]["state"] in ("ready", "failed"):
            return seen
        time.sleep(0.1)
    raise TimeoutError(f"{session_id} did not settle: {seen[-1:]}")
