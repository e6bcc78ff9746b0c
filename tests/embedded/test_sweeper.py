"""TTL expiry and idle finalization, run by the web process's sweeper against real storage."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from harness import Stack, make_stack
from tapedeck._proto import storage_pb2 as pb
from tapedeck.embedded.sweeper import sweep_once
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck.storage.records import now_ms


@pytest.fixture
def short_lived(tmp_path: Path) -> Iterator[Stack]:
    running = make_stack(tmp_path, session_ttl="3s", idle_finalize="1s", sweep_interval="0.5s")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def wait_state(api: httpx.Client, sid: str, want: str | None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get(f"/api/sessions/{sid}")
        if (want is None and response.status_code == 404) or (
            response.status_code == 200 and response.json()["state"] == want
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{sid} never became {want or 'gone'}: {response.text}")


async def test_idle_recording_is_finalized_then_expires(short_lived: Stack) -> None:
    with httpx.Client(base_url=short_lived.base_url) as api:
        created = api.post("/api/sessions").json()
        sid = created["id"]
        url = f"{short_lived.ws_base}/ws/audio?session={sid}&token={created['uploadToken']}"
        async with connect(url) as ws:  # the client vanishes without `finish`
            await ws.send(json.dumps({"type": "start", "mimeType": "audio/webm", "startedAt": 1}))
            await ws.recv()
            await ws.send(b"abc")
            await ws.recv()
        await asyncio.to_thread(wait_state, api, sid, "recorded")
        detail = api.get(f"/api/sessions/{sid}").json()
        assert detail["tracks"][0]["finished"] and detail["tracks"][0]["bytes"] == 3
        await asyncio.to_thread(wait_state, api, sid, None)
        assert not (short_lived.data_dir / sid).exists()


async def test_sweep_handles_every_page(storage: StorageClient, storage_settings: Settings) -> None:
    """More sessions than one listing page, handled a few at a time: every expired one is
    deleted, every idle one finalized, none twice and none skipped."""
    expired = [(await storage.create_session(ttl_seconds=1)).id for _ in range(700)]
    idle = [(await storage.create_session(ttl_seconds=3600)).id for _ in range(30)]
    later = now_ms() + int(storage_settings.idle_finalize.total_seconds() * 1000) + 1000

    result = await sweep_once(storage, storage_settings, now=later)

    assert (result.expired, result.finalized) == (len(expired), len(idle))
    left = (await storage.list_sessions(2000)).sessions
    assert sorted(s.id for s in left) == sorted(idle)
    assert {s.state for s in left} == {pb.SESSION_STATE_RECORDED}
    assert not any((storage_settings.data_dir / sid).exists() for sid in expired)
