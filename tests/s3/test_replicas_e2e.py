"""Two storage replicas (real processes, each its own volume) over one SeaweedFS bucket, behind
one web process (api + ingest): placement, listing, compile and download across them, and one
replica SIGKILLed while the other keeps recording (docs/decisions.md, "Several storage
replicas")."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from harness import Service, free_port, record_session, storage_healthy, wait_for, wait_settled
from s3_fixtures import S3Place
from tapedeck.ingest.uploader import upload_track
from tapedeck.storage.client import StorageClient

T = TypeVar("T")
LIVE_BYTES = 600_000
FRAME = 12_000


def replica_of(created: dict[str, Any]) -> int:
    """The replica the upload token names (its `R~` prefix; none: replica 0)."""
    head, sep, _ = created["uploadToken"].partition("~")
    return int(head) if sep else 0


@pytest.fixture
def cluster(s3_place: S3Place, tmp_path: Path) -> Any:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    port = free_port()
    base = {
        **os.environ,
        **s3_place.env(),
        "TAPEDECK_S3_PART_SIZE": str(5 * 1024 * 1024),
        "TAPEDECK_HOST": "127.0.0.1",
        "TAPEDECK_SPECULATIVE_COMPILES": "0",
        "TAPEDECK_SECRET_KEY": "replicas-test-secret",
    }
    replicas = [
        Service(
            ["serve", "storage"],
            {
                **base,
                "TAPEDECK_DATA_DIR": str(tmp_path / f"volume-{i}"),
                "TAPEDECK_STORAGE_ADDR": addr,
                "TAPEDECK_STORAGE_REPLICA": str(i),
            },
            tmp_path / f"storage-{i}.log",
        )
        for i, addr in enumerate(addrs)
    ]
    web = Service(
        ["serve", "web"],
        {
            **base,
            "TAPEDECK_DATA_DIR": str(tmp_path / "web"),
            "TAPEDECK_STORAGE_ADDR": addrs[0],
            "TAPEDECK_STORAGE_ADDRS": ",".join(addrs),
            "TAPEDECK_PORT": str(port),
        },
        tmp_path / "web.log",
    )
    try:
        for replica, addr in zip(replicas, addrs, strict=True):
            replica.start()
            wait_for(lambda a=addr: storage_healthy(a), 60, "storage health")
        web.start()
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, "web /readyz")
        yield url, replicas, addrs
    finally:
        for service in (web, *replicas):
            service.stop()
        for log in sorted(tmp_path.glob("*.log")):
            print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")


async def test_two_replicas_share_the_work_and_survive_one_down(
    cluster: Any, h264_webm: Path, opus_webm: Path
) -> None:
    url, replicas, addrs = cluster
    ws = url.replace("http", "ws", 1)
    with httpx.Client(base_url=url, timeout=60) as api:
        # Finished recordings on both replicas (placement spreads them).
        finished: dict[str, int] = {}
        while set(finished.values()) != {0, 1}:
            assert len(finished) < 12, f"all on one replica: {finished}"
            sid = await record_session(ws, api, h264_webm, opus_webm)
            finished[sid] = -1
            detail = api.get(f"/api/sessions/{sid}").json()
            assert detail["state"] in ("recording", "recorded"), detail
            # the token named the owner; the router found the same one
            finished[sid] = next(r for r in (0, 1) if sid in _ids_on(addrs[r]))
        # Compile one on each replica, through the one api.
        compiled = {r: next(s for s, o in finished.items() if o == r) for r in (0, 1)}
        for sid in compiled.values():
            assert api.post(f"/api/compile-video/{sid}").status_code == 202
        for sid in compiled.values():
            assert wait_settled(api, sid)[-1]["state"] == "ready"
        mp4s = {}
        for r, sid in compiled.items():
            answer = api.get(f"/api/download/{sid}")
            assert answer.status_code == 200 and answer.content[4:8] == b"ftyp"
            mp4s[r] = answer.content
        listed = {s["id"] for s in _list_all(api)}
        assert set(finished) <= listed

        # Live recordings on both replicas; replica 1 is SIGKILLed halfway through its own.
        live: dict[int, tuple[str, str]] = {}
        while len(live) < 2:
            created = api.post("/api/sessions").json()
            live.setdefault(replica_of(created), (created["id"], created["uploadToken"]))
        data = {r: secrets.token_bytes(LIVE_BYTES) for r in (0, 1)}
        killed = asyncio.Event()
        durable_at_kill: list[int] = []
        down_checks: dict[str, Any] = {}

        async def kill_halfway(_: object, offset: int) -> None:
            if offset >= LIVE_BYTES // 2 and not killed.is_set():
                killed.set()
                async with StorageClient(addrs[1]) as storage:  # durable, so acked or about to be
                    status = await storage.query_write_status(live[1][0], "video")
                durable_at_kill.append(status.committed_size)
                replicas[1].kill()

        async def upload(r: int) -> Any:
            sid, token = live[r]
            return await upload_track(
                ws,
                "video",
                data[r],
                session_id=sid,
                token=token,
                mime_type="video/webm;codecs=vp8",
                frame_bytes=FRAME,
                frame_interval=0.02,
                max_connections=10_000,
                after_frame=kill_halfway if r == 1 else None,
            )

        victim = asyncio.create_task(upload(1))
        survivor = asyncio.create_task(upload(0))
        await killed.wait()
        # While replica 1 is down: replica 0's recording goes on and finishes,
        first = await survivor
        assert first.committed == LIVE_BYTES
        assert not victim.done()
        # the dead replica's finished sessions still list and download (from the bucket).
        listed_down = {s["id"] for s in _list_all(api)}
        down_checks["listed"] = set(finished) <= listed_down
        gone = api.get(f"/api/download/{compiled[1]}")
        down_checks["download"] = gone.status_code == 200 and gone.content == mp4s[1]
        detail = api.get(f"/api/sessions/{compiled[1]}")
        down_checks["detail"] = detail.status_code == 200 and detail.json()["state"] == "ready"
        # Replica 1 returns; its live recording resumes where it was acknowledged.
        replicas[1].start()
        wait_for(lambda: storage_healthy(addrs[1]), 60, "storage 1 back")
        second = await asyncio.wait_for(victim, 300)
        assert down_checks == {"listed": True, "download": True, "detail": True}
        assert second.committed == LIVE_BYTES
        assert second.connections > 1  # it did reconnect
        assert 0 < durable_at_kill[0] < LIVE_BYTES  # killed mid-recording
        for r in (0, 1):
            sid = live[r][0]
            assert _stored(addrs[r], sid) == data[r]  # 0 acknowledged bytes lost
        print(
            f"replicas: finished {len(finished)} ({list(finished.values())}), "
            f"victim had {durable_at_kill[0]} B durable at the kill, "
            f"{second.connections} connections, "
            f"{LIVE_BYTES} of {LIVE_BYTES} B stored on each replica"
        )


def _list_all(api: httpx.Client) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        answer = api.get(
            "/api/sessions", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        found += body["items"]
        cursor = body.get("nextCursor")
        if not cursor:
            return found


def _ids_on(addr: str) -> set[str]:
    async def ids() -> set[str]:
        async with StorageClient(addr) as storage:
            page = await storage.list_sessions(1000)
            return {s.id for s in page.sessions}

    return _run(ids())


def _stored(addr: str, sid: str) -> bytes:
    async def read() -> bytes:
        async with StorageClient(addr) as storage:
            return b"".join([c async for c in storage.read(sid, "video")])

    return _run(read())


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Sync helper from inside the test's loop: a thread with its own loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
