"""Drain and admission with real processes: storage, two ingest replicas, protocol clients.

SIGTERM one ingest while clients stream through it: it turns unready, refuses new sockets with
1012, lets storage acknowledge what it already handed over, closes every socket with 1012 and
exits on its own; the clients resume on the other replica and every byte is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_websocket import expect_close, new_session, start
from websockets.asyncio.client import ClientConnection, connect

from harness import Service, Stack, free_port, make_stack, wait_for
from tapedeck.ingest.admission import admit, drained
from tapedeck.ingest.protocol import Close
from tapedeck.ingest.uploader import UploadResult, upload_track

# --- the pure rules ---------------------------------------------------------------------------


def test_admission_refuses_when_draining_or_full() -> None:
    assert admit(draining=False, open_sockets=0, max_streams=2) is None
    assert admit(draining=False, open_sockets=1, max_streams=2) is None
    full = admit(draining=False, open_sockets=2, max_streams=2)
    assert full is not None and (full.close, full.code) == (Close.TRY_LATER, "ingest-full")
    assert full.close == 1013
    leaving = admit(draining=True, open_sockets=0, max_streams=2)
    assert leaving is not None and (leaving.close, leaving.code) == (Close.RESTART, "draining")
    assert leaving.close == 1012
    # draining wins over full: the client should go elsewhere at once, not back off
    both = admit(draining=True, open_sockets=5, max_streams=2)
    assert both is not None and both.close == Close.RESTART
    assert admit(draining=False, open_sockets=10_000, max_streams=0) is None  # 0: no limit


def test_drained_only_when_storage_acknowledged_everything() -> None:
    assert drained(inflight=0)
    assert not drained(inflight=1)


# --- real processes ---------------------------------------------------------------------------


@pytest.fixture
def two_ingests(tmp_path: Path) -> Iterator[tuple[Stack, Service, str]]:
    """A stack (storage + web "A", which SIGTERM drains) and a second ingest "B" beside it."""
    stack = make_stack(tmp_path, drain_timeout="120s")
    port_b = free_port()
    env_b = {**stack.env, "TAPEDECK_PORT": str(port_b)}
    b = Service(["serve", "ingest"], env_b, tmp_path / "ingest-b.log")
    stack.extra.append(b)
    try:
        stack.start()
        b.start()
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port_b}/readyz").status_code == 200,
            60,
            "ingest B /readyz",
        )
        yield stack, b, f"ws://127.0.0.1:{port_b}"
    finally:
        if stack.storage.process is not None and stack.storage.process.poll() is None:
            os.kill(stack.storage.process.pid, signal.SIGCONT)
        stack.stop()


CLIENTS = 4
SIZE = 1_500_000
FRAME = 32 * 1024


async def test_sigterm_drains_to_the_other_replica(
    two_ingests: tuple[Stack, Service, str],
) -> None:
    stack, _, b_base = two_ingests
    a_base = stack.ws_base
    assert stack.web.process is not None and stack.storage.process is not None
    api = httpx.Client(base_url=stack.base_url, timeout=30)
    sessions = [new_session(api) for _ in range(CLIENTS)]
    datas = [os.urandom(SIZE) for _ in range(CLIENTS)]
    a_terminated = False
    paused = 0
    pause_changed = asyncio.Condition()
    more = asyncio.Event()  # frames after storage stopped: in flight when the drain begins
    rest = asyncio.Event()  # everything else, once storage is back

    def service() -> str:
        """The Service in front of the replicas: A until it is terminated, then B."""
        return b_base if a_terminated else a_base

    async def gate(_: ClientConnection, offset: int) -> None:
        nonlocal paused
        for at, event in ((SIZE // 3, more), (SIZE // 3 + 2 * FRAME, rest)):
            if offset >= at and not event.is_set():
                async with pause_changed:
                    paused += 1
                    pause_changed.notify_all()
                await event.wait()

    async def client(i: int) -> UploadResult:
        sid, token = sessions[i]
        return await upload_track(
            service, "video", datas[i], session_id=sid, token=token, frame_bytes=FRAME,
            after_frame=gate,
        )  # fmt: skip

    uploads = [asyncio.create_task(client(i)) for i in range(CLIENTS)]
    try:
        async with pause_changed:
            await asyncio.wait_for(pause_changed.wait_for(lambda: paused >= CLIENTS), 120)
        os.kill(stack.storage.process.pid, signal.SIGSTOP)
        more.set()  # two frames more of each track, which storage cannot acknowledge yet
        async with pause_changed:
            await asyncio.wait_for(pause_changed.wait_for(lambda: paused >= 2 * CLIENTS), 120)
        await asyncio.sleep(0.5)  # let ingest read them (not needed for correctness)
        a_terminated = True
        stack.web.process.send_signal(signal.SIGTERM)

        # Draining: unready, and a new socket is refused with 1012 before any frame.
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(200):
                ready = await http.get(f"{stack.base_url}/readyz")
                if ready.status_code == 503 and ready.json()["error"]["code"] == "draining":
                    break  # (storage being stopped, it said storage-unavailable before)
                await asyncio.sleep(0.05)
        assert ready.status_code == 503, ready.text
        assert ready.json()["error"]["code"] == "draining"
        sid, token = sessions[0]
        async with connect(f"{a_base}/ws/audio?session={sid}&token={token}") as late:
            code, error = await expect_close(late)
        assert code == 1012 and error is not None and error["code"] == "draining", (code, error)
        assert stack.web.process.poll() is None  # still waiting for storage's acks

        os.kill(stack.storage.process.pid, signal.SIGCONT)
        rest.set()
        results = await asyncio.wait_for(asyncio.gather(*uploads), 240)
    finally:
        more.set()
        rest.set()
        for task in uploads:
            task.cancel()
    assert stack.web.process.wait(60) == 0, stack.logs()  # exited on its own, not by SIGTERM

    for (sid, _), data, result in zip(sessions, datas, results, strict=True):
        assert result.committed == len(data)
        assert (stack.data_dir / sid / "video.webm").read_bytes() == data
        first = result.attempts[0]
        assert first.base == a_base and (first.close, first.error) == (1012, "draining"), (
            result.attempts
        )
        # What storage had was acknowledged before the 1012: the next replica resumes exactly
        # at the last ack the drained connection sent.
        resumed = next(a for a in result.attempts[1:] if a.ready is not None)
        assert resumed.base == b_base
        assert resumed.ready == first.last_ack, result.attempts
        assert first.last_ack is not None and first.last_ack > SIZE // 3 - FRAME
    api.close()


async def test_full_replica_refuses_with_1013_then_admits(tmp_path: Path) -> None:
    stack = make_stack(tmp_path, ingest_max_streams="2")
    try:
        stack.start()
        api = httpx.Client(base_url=stack.base_url, timeout=30)
        held: list[ClientConnection] = []
        for _ in range(2):
            sid, token = new_session(api)
            ws = await connect(f"{stack.ws_base}/ws/video?session={sid}&token={token}")
            await ws.send(start())
            assert json.loads(await ws.recv())["type"] == "ready"
            held.append(ws)
        sid, token = new_session(api)
        async with connect(f"{stack.ws_base}/ws/video?session={sid}&token={token}") as third:
            code, error = await expect_close(third)
        assert code == 1013 and error is not None and error["code"] == "ingest-full"
        assert not (stack.data_dir / sid / "video.webm").exists() or (
            (stack.data_dir / sid / "video.webm").stat().st_size == 0
        )

        refused_once = asyncio.Event()
        calls = 0

        def service() -> str:
            nonlocal calls
            calls += 1
            if calls == 2:  # the first attempt ended (refused): a slot frees up
                refused_once.set()
            return stack.ws_base

        async def free_one() -> None:
            await refused_once.wait()
            await held.pop().close()

        freeing = asyncio.create_task(free_one())
        data = os.urandom(200_000)
        result = await upload_track(
            service, "video", data, session_id=sid, token=token, max_connections=1000
        )
        await freeing
        assert result.committed == len(data)
        assert (stack.data_dir / sid / "video.webm").read_bytes() == data
        refused = [a for a in result.attempts if a.close == 1013]
        assert refused and all(a.error == "ingest-full" for a in refused)
        for ws in held:
            await ws.close()
        metrics = httpx.get(f"{stack.base_url}/metrics").text
        assert 'tapedeck_ingest_closes_total{code="1013"}' in metrics
        api.close()
    finally:
        stack.stop()
