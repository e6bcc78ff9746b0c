"""Every long-lived `tapedeck` role as a container runs it: PID 1 of its own PID namespace, where
the kernel drops every signal the process has no handler for, so a pod's deletion would wait out
the whole grace period (storage did: tests/storage/test_pid1.py). A compile Job's pod too: a
compile of a long recording runs for minutes, and a deleted Job must not wait it out."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import kmock
import psutil
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from harness import free_port
from media import make_h264_webm
from storage_fixtures import storage_serving
from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.exits import EXIT_RETRY
from tapedeck.compiler.queue import request_compile
from tapedeck.settings import Settings

EXIT_WAIT = (
    20.0  # a bound for the test to give up (the chart's grace period is 30 s), not a measure
)
READY_WAIT = 60.0
NS = "tapedeck"
CRD = Path(__file__).parents[1] / "charts/tapedeck/crds/recordingsessions.tapedeck.io.yaml"


def pid_namespace_available() -> bool:
    try:
        probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True)
    except FileNotFoundError:
        return False
    return probe.returncode == 0


@contextlib.asynccontextmanager
async def api_server() -> AsyncIterator[str]:
    """kmock's Kubernetes emulator with the RecordingSession CRD: what the operator logs in to."""
    crd = yaml.safe_load(CRD.read_text())
    names, version = crd["spec"]["names"], crd["spec"]["versions"][0]
    async with kmock.KubernetesEmulator() as cluster, kmock.Server(cluster):
        cluster.resources.load_bundled()
        cluster.resources[f"{crd['spec']['group']}/{version['name']}/{names['plural']}"] = (
            kmock.ResourceInfo(
                namespaced=True,
                kind=names["kind"],
                singular=names["singular"],
                shortnames=set(names["shortNames"]),
                categories=set(names["categories"]),
                subresources=set(version.get("subresources", {})),
                verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
            )
        )
        yield str(cluster.url).rstrip("/")


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": server}}],
                "users": [{"name": "test", "user": {}}],
                "contexts": [
                    {
                        "name": "test",
                        "context": {"cluster": "test", "user": "test", "namespace": NS},
                    }
                ],
            }
        )
    )
    return path


async def healthy(url: str, launcher: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(int(READY_WAIT / 0.1)):
            assert launcher.poll() is None, "the service exited before it was healthy"
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=2)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    pytest.fail(f"{url} never answered 200")


@pytest.mark.skipif(not pid_namespace_available(), reason="needs unshare --pid (root)")
@pytest.mark.parametrize("role", ["api", "ingest", "web", "operator"])
async def test_role_as_pid_1_stops_on_sigterm(role: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TAPEDECK_DATA_DIR": str(tmp_path / "data"),
        "TAPEDECK_STORAGE_ADDR": f"127.0.0.1:{free_port()}",  # nothing there: not needed to stop
        "TAPEDECK_NAMESPACE": NS,
        "TAPEDECK_COMPILE_IMAGE": "tapedeck-compile:test",
        "KUBECONFIG": str(tmp_path / "kubeconfig"),
    }
    if role == "operator":
        url = f"http://127.0.0.1:{port}/healthz"
        args = ["operator", "-n", NS, "--liveness", url]
    else:
        url = f"http://127.0.0.1:{port}/healthz"
        args = ["serve", role, "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "service.log"
    async with contextlib.AsyncExitStack() as stack:
        if role == "operator":
            kubeconfig(tmp_path / "kubeconfig", await stack.enter_async_context(api_server()))
        with open(log, "wb") as out:
            launcher = subprocess.Popen(
                ["unshare", "--pid", "--fork", sys.executable, "-m", "tapedeck", *args],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            await healthy(url, launcher)
            (service,) = psutil.Process(launcher.pid).children()  # PID 1 inside its namespace
            if role in ("ingest", "web"):
                # A client mid-connection: ingest must not wait on it past the grace period.
                ws = await stack.enter_async_context(connect(f"ws://127.0.0.1:{port}/ws/video"))
            service.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(service.wait, EXIT_WAIT)
            except psutil.TimeoutExpired:
                pytest.fail(f"{role} as PID 1 ignored SIGTERM\n{log.read_text()[-3000:]}")
            if role in ("ingest", "web"):
                with pytest.raises(ConnectionClosed):  # after the drain's `error` message
                    while True:
                        await asyncio.wait_for(ws.recv(), EXIT_WAIT)
                assert ws.close_code == 1012  # service restart: reconnect elsewhere
            assert await asyncio.to_thread(launcher.wait, EXIT_WAIT) == 0, log.read_text()[-3000:]
        finally:
            if launcher.poll() is None:
                for child in psutil.Process(launcher.pid).children(recursive=True):
                    child.kill()
                launcher.kill()
                launcher.wait()


@pytest.mark.skipif(not pid_namespace_available(), reason="needs unshare --pid (root)")
async def test_compile_as_pid_1_stops_on_sigterm(tmp_path: Path) -> None:
    """Stopped mid-compile, it leaves the session `compiling` and exits "retry later" (75): the
    next pod (or the sweeper) takes the compile up again."""
    settings = Settings(data_dir=tmp_path / "data", storage_addr=f"127.0.0.1:{free_port()}")
    video = make_h264_webm(tmp_path / "video.webm", seconds=20).read_bytes()
    sid = "abcdefgh-sigterm"
    log = tmp_path / "compile.log"
    async with storage_serving(settings) as storage:
        await storage.create_session(sid)
        writer = await storage.open_writer(sid, "video", "video/webm;codecs=h264", 1.0)
        await writer.send(0, video, finish=True)
        async for ack in writer.acks():
            if ack.finished:
                break
        writer.cancel()
        assert (await request_compile(storage, await storage.get_session(sid))).queued
        # Re-encoding with the slowest preset: a compile that cannot end on its own meanwhile.
        argv = ["compile", sid, "--video-codec", "h264", "--preset", "veryslow"]
        env = {**os.environ, "TAPEDECK_STORAGE_ADDR": settings.storage_addr}
        env["TAPEDECK_DATA_DIR"] = str(tmp_path / "unused")
        with open(log, "wb") as out:
            launcher = subprocess.Popen(
                ["unshare", "--pid", "--fork", sys.executable, "-m", "tapedeck", *argv],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            for _ in range(int(READY_WAIT / 0.1)):
                state = (await storage.get_session(sid)).state
                if state != pb.SESSION_STATE_QUEUED or launcher.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            assert state == pb.SESSION_STATE_COMPILING, log.read_text()[-3000:]
            (compile_,) = psutil.Process(launcher.pid).children()
            compile_.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(compile_.wait, EXIT_WAIT)
            except psutil.TimeoutExpired:
                pytest.fail(f"compile as PID 1 ignored SIGTERM\n{log.read_text()[-3000:]}")
            code = await asyncio.to_thread(launcher.wait, EXIT_WAIT)
            assert code == EXIT_RETRY, log.read_text()[-3000:]
            assert (await storage.get_session(sid)).state == pb.SESSION_STATE_COMPILING
        finally:
            if launcher.poll() is None:
                for child in psutil.Process(launcher.pid).children(recursive=True):
                    child.kill()
                launcher.kill()
                launcher.wait()
