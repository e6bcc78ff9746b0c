"""The S3 tier under faults, with real processes: `tapedeck serve storage` + `serve web` with
TAPEDECK_S3_BUCKET set, a real SeaweedFS, the WebSocket upload client. Each test counts the bytes
acknowledged to the client against the bytes stored in the bucket (printed; run with -s)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import Stack, make_stack
from s3_fixtures import WeedServer
from tapedeck.ingest.uploader import upload_track

pytestmark = pytest.mark.faults

MiB = 1024 * 1024
PART = 5 * MiB
BUCKET = "tapedeck-faults"


def tier_stack(tmp_path: Path, server: WeedServer, **env: str) -> Stack:
    stack = make_stack(tmp_path)
    stack.env.update(server.env())
    stack.env.update(
        {
            "TAPEDECK_S3_BUCKET": BUCKET,
            "TAPEDECK_S3_PREFIX": "faults",
            "TAPEDECK_S3_PART_SIZE": str(PART),
            "TAPEDECK_S3_VOLUME_TAIL": str(PART),
            "TAPEDECK_S3_CONNECT_TIMEOUT": "1",
            **env,
        }
    )
    return stack


def upload_state(stack: Stack, sid: str) -> dict[str, Any]:
    path = stack.data_dir / sid / ".video.upload.json"
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def wait_until(check: Callable[[], Any], timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stored(server: WeedServer, sid: str) -> bytes:
    client: Any = server.client()
    answer = client.get_object(Bucket=BUCKET, Key=f"faults/sessions/{sid}/video.webm")
    return bytes(answer["Body"].read())


def report(case: str, acked: int, stored_bytes: int, source: int) -> None:
    print(
        f"\n{case}: acknowledged {acked} bytes, stored in the bucket {stored_bytes} bytes "
        f"(source {source}); lost {acked - stored_bytes if acked > stored_bytes else 0}"
    )


async def test_s3_stopped_mid_recording_loses_nothing(
    own_s3_server: WeedServer, tmp_path: Path
) -> None:
    server = own_s3_server
    server.create_bucket(BUCKET)
    stack = tier_stack(tmp_path, server).start()
    try:
        created = httpx.post(f"{stack.base_url}/api/sessions").json()
        sid = created["id"]
        source = os.urandom(4 * PART + 123_456)
        stopped: list[int] = []

        async def stop_s3(ws: Any, offset: int) -> None:
            if not stopped and offset >= PART + MiB:
                # The first part went to the bucket; then the bucket goes away.
                await asyncio.to_thread(
                    wait_until, lambda: upload_state(stack, sid).get("parts"), 60, "part 1"
                )
                stopped.append(offset)
                await asyncio.to_thread(server.stop)

        result = await upload_track(
            stack.ws_base,
            "video",
            source,
            session_id=sid,
            token=created["uploadToken"],
            frame_bytes=256 * 1024,
            after_frame=stop_s3,
        )
        acked = max(result.acks)
        assert stopped, "the store was never stopped"
        assert acked == result.committed == len(source), "acks stopped with the store"
        state = upload_state(stack, sid)
        assert not state.get("completed"), "completed with the store down?"
        wait_until(
            lambda: "the bucket does not answer" in stack.storage.log.read_text(),
            what="storage saying why nothing ships",
        )

        server.start()  # the same store, its data and ports: the upload goes on
        wait_until(lambda: upload_state(stack, sid).get("completed"), what="upload completed")
        kept = stored(server, sid)
        report("S3 stopped mid-recording", acked, len(kept), len(source))
        assert kept == source
        assert upload_state(stack, sid)["upload_id"] == state["upload_id"]
    finally:
        stack.stop()
        print(stack.logs())  # shown when the test fails


async def test_storage_killed_mid_multipart_resumes_the_same_upload(
    own_s3_server: WeedServer, tmp_path: Path
) -> None:
    server = own_s3_server
    server.create_bucket(BUCKET)
    stack = tier_stack(tmp_path, server).start()
    try:
        created = httpx.post(f"{stack.base_url}/api/sessions").json()
        sid = created["id"]
        source = os.urandom(4 * PART + 654_321)
        upload_ids: list[str] = []

        async def kill_storage(ws: Any, offset: int) -> None:
            if not upload_ids and offset >= 2 * PART + MiB:
                state = await asyncio.to_thread(
                    wait_until, lambda: upload_state(stack, sid).get("parts"), 60, "a part"
                )
                assert state
                upload_ids.append(upload_state(stack, sid)["upload_id"])
                await asyncio.to_thread(stack.storage.kill)  # SIGKILL, mid-multipart
                await asyncio.to_thread(stack.start_storage)

        result = await upload_track(
            stack.ws_base,
            "video",
            source,
            session_id=sid,
            token=created["uploadToken"],
            frame_bytes=256 * 1024,
            after_frame=kill_storage,
            max_connections=50,
        )
        acked = max(result.acks)
        assert upload_ids, "storage was never killed"
        assert result.connections >= 2
        assert acked == result.committed == len(source)
        wait_until(lambda: upload_state(stack, sid).get("completed"), what="upload completed")
        state = upload_state(stack, sid)
        assert state["upload_id"] == upload_ids[0], "a restarted storage began another upload"
        kept = stored(server, sid)
        report("storage SIGKILLed mid-multipart", acked, len(kept), len(source))
        assert kept == source
        client: Any = server.client()
        assert client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    finally:
        stack.stop()
        print(stack.logs())  # shown when the test fails


async def test_a_bucket_that_refuses_loses_nothing_and_says_why(
    own_s3_server: WeedServer, tmp_path: Path
) -> None:
    server = own_s3_server
    server.create_bucket(BUCKET)
    stack = tier_stack(tmp_path, server, AWS_SECRET_ACCESS_KEY="not-the-secret").start()
    try:
        created = httpx.post(f"{stack.base_url}/api/sessions").json()
        sid = created["id"]
        source = os.urandom(2 * PART + 4321)
        result = await upload_track(
            stack.ws_base,
            "video",
            source,
            session_id=sid,
            token=created["uploadToken"],
            frame_bytes=256 * 1024,
        )
        acked = max(result.acks)
        assert acked == len(source), "recording stopped because the bucket refused"
        log = wait_until(
            lambda: (
                "the bucket refused" in stack.storage.log.read_text()
                and stack.storage.log.read_text()
            ),
            what="the refusal in storage's log",
        )
        assert "SignatureDoesNotMatch" in log or "InvalidAccessKeyId" in log, log[-2000:]
        # Nothing lost: every acknowledged byte is still on the volume.
        assert (stack.data_dir / sid / "video.webm").read_bytes() == source
        assert not upload_state(stack, sid).get("completed")

        stack.storage.stop()  # the operator fixes the credentials
        stack.env["AWS_SECRET_ACCESS_KEY"] = server.secret_key
        stack.start_storage()
        wait_until(lambda: upload_state(stack, sid).get("completed"), what="upload completed")
        kept = stored(server, sid)
        report("bucket refusing", acked, len(kept), len(source))
        assert kept == source
    finally:
        stack.stop()
        print(stack.logs())  # shown when the test fails
