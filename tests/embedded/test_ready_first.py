"""The embedded worker and a compile that is `ready` before its extras (docs/decisions.md,
"Ready first"): the child keeps running to make them and is neither killed nor retried for
it; the api lists each extra only once storage has it.

Real processes: storage, the web process with its worker, the compile child, and FFmpeg
behind a gate that holds the extras' runs until the test opens it (`media.ExtrasGate`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from harness import Stack, make_stack, record_session, wait_for
from media import ExtrasGate

MEDIA_KEYS = ("posterUrl", "storyboardUrl", "hlsUrl")


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[ExtrasGate]:
    gate = ExtrasGate(tmp_path)
    yield gate
    gate.open()  # whatever still waits finishes (or was killed with its parent)


def start(tmp_path: Path, gate: ExtrasGate, **settings: str) -> Stack:
    return make_stack(
        tmp_path,
        speculative_compiles="0",  # the compile child, as a Job runs it
        ffmpeg=str(gate.script),
        hls_min_duration="0s",
        **settings,
    ).start()


def compiles(stack: Stack, session_id: str) -> list[psutil.Process]:
    """The web process's `tapedeck compile ID` children that are still running."""
    assert stack.web.process is not None
    found = []
    for proc in psutil.Process(stack.web.process.pid).children(recursive=True):
        try:
            if proc.cmdline()[-3:] == ["tapedeck", "compile", session_id] and proc.is_running():
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def detail(api: httpx.Client, session_id: str) -> dict[str, Any]:
    got = api.get(f"/api/sessions/{session_id}")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


def ready_without_extras(api: httpx.Client, session_id: str) -> dict[str, Any]:
    """Waits for `ready` (the extras held at the gate) and checks what it offers then."""
    wait_for(lambda: detail(api, session_id)["state"] == "ready", 120, "ready")
    now = detail(api, session_id)
    assert now["media"] == dict.fromkeys(MEDIA_KEYS), now["media"]
    assert now["output"]["size"] > 0 and now["compileAttempts"] == 1
    download = api.get(f"/api/download/{session_id}", headers={"Range": "bytes=0-1023"})
    assert download.status_code == 206 and len(download.content) == 1024
    assert api.get(f"/api/sessions/{session_id}/poster.jpg").status_code == 404
    return now


async def test_the_compile_child_makes_the_extras_after_ready_unhindered(
    tmp_path: Path, gate: ExtrasGate, h264_webm: Path, opus_webm: Path
) -> None:
    stack = start(tmp_path, gate)
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            sid = await record_session(stack.ws_base, api, h264_webm, opus_webm)
            assert api.post(f"/api/compile-video/{sid}").status_code == 202
            wait_for(gate.reached.exists, 120, "the extras to start")
            ready = ready_without_extras(api, sid)
            child = compiles(stack, sid)
            assert len(child) == 1, child  # still at work on the extras, not killed

            gate.open()
            wait_for(lambda: all(detail(api, sid)["media"].values()), 120, "every extra")
            child[0].wait(60)
            after = detail(api, sid)
            assert after["state"] == "ready" and after["compileAttempts"] == 1  # no retry
            assert after["output"] == ready["output"]
            poster = api.get(after["media"]["posterUrl"])
            assert poster.status_code == 200 and poster.headers["content-type"] == "image/jpeg"
    finally:
        stack.stop()


async def test_a_compile_killed_after_ready_leaves_it_ready_without_the_missing_extras(
    tmp_path: Path, gate: ExtrasGate, h264_webm: Path, opus_webm: Path
) -> None:
    """The documented gap: a compile killed between `ready` and its extras (here at the
    compile timeout) leaves them missing. The session stays `ready`, not `failed`, is not
    compiled again, and the api offers no extra it does not have."""
    stack = start(tmp_path, gate, compile_timeout="40s", compile_max_attempts="1")
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as api:
            sid = await record_session(stack.ws_base, api, h264_webm, opus_webm)
            assert api.post(f"/api/compile-video/{sid}").status_code == 202
            wait_for(gate.reached.exists, 120, "the extras to start")
            ready_without_extras(api, sid)
            wait_for(lambda: not compiles(stack, sid), 120, "the timeout to kill the compile")
            wait_for(
                lambda: (
                    "its extras did not finish"
                    in (tmp_path / "web.log").read_text(errors="replace")
                ),
                30,
                "the worker's account of the kill",
            )
            after = detail(api, sid)
            assert after["state"] == "ready" and after["error"] is None, after
            assert after["compileAttempts"] == 1
            assert after["media"] == dict.fromkeys(MEDIA_KEYS)
    finally:
        stack.stop()
