"""SIGKILL each process of `tapedeck up` mid-operation: `up` restarts it, nothing that was
acknowledged is lost, and no compile is stuck or duplicated."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness import Up, start_up, wait_for, wait_settled
from media import make_vp8_webm
from tapedeck.ingest.uploader import upload_track

pytestmark = pytest.mark.faults


def new_session(up: Up) -> dict[str, Any]:
    return dict(httpx.post(f"{up.url}/api/sessions").json())


async def stream_and_kill(up: Up, role: str, source: bytes) -> tuple[str, int]:
    created = new_session(up)
    killed: list[int] = []

    async def kill_once(ws: Any, offset: int) -> None:
        if not killed and offset > len(source) // 3:
            killed.append(up.kill_child(role))
        await asyncio.sleep(0.002)

    result = await upload_track(
        up.ws_base,
        "video",
        source,
        session_id=created["id"],
        token=created["uploadToken"],
        frame_bytes=32 * 1024,
        after_frame=kill_once,
        max_connections=200,
    )
    assert (killed and not psutil.pid_exists(killed[0])) or psutil.Process(
        killed[0]
    ).status() == "zombie"
    return str(created["id"]), result.connections


@pytest.mark.parametrize("role", ["storage", "web"])
async def test_killed_service_is_restarted_and_upload_resumes(
    up: Up, role: str, h264_webm: Path
) -> None:
    source = (h264_webm.read_bytes() * 4)[:2_000_000]
    before = up.child(role)
    session_id, connections = await stream_and_kill(up, role, source)
    assert connections >= 2
    assert up.child(role) != before  # a new process
    assert (up.data_dir / session_id / "video.webm").read_bytes() == source
    assert "restart" in up.log.read_text()


def compile_process(session_id: str) -> psutil.Process | None:
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        # `tapedeck compile ID`, or the follower that compiles a session it saw recording.
        if cmdline[-2:] in (["compile", session_id], ["tapedeck.compiler.follow", session_id]):
            return proc
    return None


@pytest.fixture(scope="module")
def long_vp8(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Long enough that the transcode is still running when we kill it."""
    return make_vp8_webm(tmp_path_factory.mktemp("long") / "long.webm", 20)


@pytest.mark.parametrize("victim", ["compile", "web"])
async def test_killed_compile_is_retried_once_to_one_output(
    up: Up, long_vp8: Path, victim: str
) -> None:
    created = new_session(up)
    await upload_track(
        up.ws_base,
        "video",
        long_vp8.read_bytes(),
        session_id=created["id"],
        token=created["uploadToken"],
        mime_type="video/webm;codecs=vp8",
        frame_bytes=256 * 1024,
    )
    sid = created["id"]
    assert httpx.post(f"{up.url}/api/compile-video/{sid}").status_code == 202
    wait_for(
        lambda: httpx.get(f"{up.url}/api/sessions/{sid}").json()["progress"] > 0,
        60,
        "compile progress",
    )
    proc = compile_process(sid)
    assert proc is not None
    if victim == "compile":
        proc.send_signal(signal.SIGKILL)
    else:
        up.kill_child("web")  # the worker dies; its compile child is orphaned or dies too
    with httpx.Client(base_url=up.url) as api:
        detail = wait_settled(api, sid)[-1]
    assert detail["state"] == "ready", detail
    assert detail["compileAttempts"] >= 2
    outputs = list((up.data_dir / sid).glob("*.mp4"))
    assert [p.name for p in outputs] == [f"{sid}.mp4"]
    assert not list((up.data_dir / sid).glob(".*partial"))
    assert os.path.getsize(outputs[0]) == detail["output"]["size"]


async def test_a_storage_restart_does_not_finalize_a_live_recording(
    tmp_path: Path, h264_webm: Path
) -> None:
    """A recording longer than IDLE_FINALIZE, never idle: storage is SIGKILLed and restarted,
    and the client (like a browser backing off) reconnects a few seconds later. The restart
    is not the client's silence: the recording must go on, not be finalized and refused."""
    up = start_up(tmp_path, idle_finalize="8s", sweep_interval="1s")
    try:
        created = new_session(up)
        source = (h264_webm.read_bytes() * 8)[:1_200_000]
        started = time.monotonic()
        killed: list[int] = []

        async def kill_after_ten_seconds(ws: Any, offset: int) -> None:
            if not killed and time.monotonic() - started > 10:
                killed.append(up.kill_child("storage"))
                await asyncio.sleep(4)  # the client's backoff before it reconnects

        result = await upload_track(
            up.ws_base,
            "video",
            source,
            session_id=created["id"],
            token=created["uploadToken"],
            frame_bytes=8 * 1024,
            frame_interval=0.1,
            after_frame=kill_after_ten_seconds,
            max_connections=50,
        )
        assert killed, "the recording ended before storage was killed"
        assert result.committed == len(source)
        assert (up.data_dir / created["id"] / "video.webm").read_bytes() == source
    finally:
        up.stop()
