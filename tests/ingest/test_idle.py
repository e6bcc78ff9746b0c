"""Silent sockets are closed (4408) so their sessions stop `writing` and can be finalized; a
client that waits for storage is not silent. Real storage and web processes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from harness import Stack, make_stack, wait_for
from tapedeck.ingest.uploader import RETRY_CODES, upload_track

KiB = 1024


def start() -> str:
    return json.dumps({"type": "start", "mimeType": "video/webm", "startedAt": 1700000000000})


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = make_stack(
        tmp_path_factory.mktemp("idle"),
        socket_idle_timeout="1s",
        idle_finalize="2s",
        max_inflight_bytes=str(256 * KiB),
    ).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(idle_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=idle_stack.base_url, timeout=30) as client:
        yield client


def new_session(api: httpx.Client) -> tuple[str, str]:
    body = api.post("/api/sessions").json()
    return body["id"], body["uploadToken"]


@pytest.mark.parametrize("frames", [0, 1])
async def test_silent_socket_is_closed_and_its_session_released(
    idle_stack: Stack, api: httpx.Client, frames: int
) -> None:
    sid, token = new_session(api)
    async with connect(f"{idle_stack.ws_base}/ws/video?session={sid}&token={token}") as ws:
        await ws.send(start())
        assert json.loads(await ws.recv())["type"] == "ready"
        for _ in range(frames):
            await ws.send(b"m" * 1000)
            assert json.loads(await ws.recv()) == {"type": "ack", "committed": 1000}
        # Then nothing: the server must end it (the test's own timeout is the only bound).
        error = json.loads(await asyncio.wait_for(ws.recv(), 60))
        await ws.wait_closed()
    assert ws.close_code == 4408 and 4408 in RETRY_CODES
    assert error["type"] == "error" and error["code"] == "idle-timeout" and error["message"]
    # The write stream ended: no longer `writing`, so idle finalization takes it.
    wait_for(lambda: not api.get(f"/api/sessions/{sid}").json()["writing"], 30, "not writing")
    wait_for(lambda: api.get(f"/api/sessions/{sid}").json()["state"] == "recorded", 30, "recorded")


@pytest.fixture
def paused_storage(idle_stack: Stack) -> Iterator[None]:
    """Storage stopped (SIGSTOP): a disk that does not answer. Resumed by the test."""
    assert idle_stack.storage.process
    try:
        yield
    finally:
        os.kill(idle_stack.storage.process.pid, signal.SIGCONT)


@pytest.mark.usefixtures("paused_storage")
@pytest.mark.parametrize("sent", [1 * KiB, 1024 * KiB])
async def test_client_waiting_for_slow_storage_is_not_idle(
    idle_stack: Stack, api: httpx.Client, sent: int
) -> None:
    """1 KiB: a client that sent its bytes and waits for their acks (the browser does so
    before `finish` after a reload). 1 MiB: more than the inflight window, so ingest itself
    stops reading while storage is stalled."""
    sid, token = new_session(api)
    data = os.urandom(sent)
    async with connect(
        f"{idle_stack.ws_base}/ws/video?session={sid}&token={token}", compression=None
    ) as ws:
        await ws.send(start())
        assert json.loads(await ws.recv())["type"] == "ready"
        assert idle_stack.storage.process
        os.kill(idle_stack.storage.process.pid, signal.SIGSTOP)

        async def send_all() -> None:
            for i in range(0, sent, 64 * KiB):
                await ws.send(data[i : i + 64 * KiB])

        sending = asyncio.create_task(asyncio.wait_for(send_all(), 60))
        await asyncio.sleep(4)  # several idle timeouts with storage stopped
        os.kill(idle_stack.storage.process.pid, signal.SIGCONT)
        await sending
        await ws.send(json.dumps({"type": "finish"}))
        messages = []
        while not messages or messages[-1]["type"] not in ("finished", "error"):
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
    assert messages[-1] == {"type": "finished", "committed": sent}, messages
    assert (idle_stack.data_dir / sid / "video.webm").read_bytes() == data


async def test_uploader_resumes_after_an_idle_close(tmp_path: Path) -> None:
    """4408 means "reconnect and resume": a client that pauses longer than the timeout
    between frames loses its socket, not its upload. (Idle finalization stays at its
    default here: 2 s would finalize the session during the pause.)"""
    stack = make_stack(tmp_path, socket_idle_timeout="1s").start()
    try:
        with httpx.Client(base_url=stack.base_url) as client:
            sid, token = new_session(client)
        data = os.urandom(3 * 10 * KiB)
        result = await upload_track(
            stack.ws_base,
            "video",
            data,
            session_id=sid,
            token=token,
            frame_bytes=10 * KiB,
            frame_interval=2.5,  # longer than the idle timeout
        )
        assert result.connections > 1 and result.committed == len(data)
        assert (stack.data_dir / sid / "video.webm").read_bytes() == data
    finally:
        stack.stop()
