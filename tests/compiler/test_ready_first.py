"""A session is `ready` as soon as its MP4 is published; the poster, storyboard and HLS follow,
made by the same compile and listed as each lands (docs/decisions.md, "Ready first").

Real storage over gRPC, the real compile (`job.compile_session`) and a real FFmpeg behind a
gate that holds the extras' FFmpeg runs (and only those) until the test opens it
(`media.ExtrasGate`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from harness import free_port
from media import ExtrasGate
from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.exits import EXIT_OK
from tapedeck.compiler.job import compile_session
from tapedeck.compiler.plan import OutputOptions
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient

SID = "ready-first-0001"
EXTRAS = {"poster.jpg", "storyboard.jpg", "storyboard.vtt", "hls.m3u8", "hls-init.mp4"}


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def queued_recording(storage: StorageClient, video: Path, audio: Path) -> None:
    """A finished H.264 + Opus recording whose compile was requested."""
    await storage.create_session(SID)
    for name, path, mime in (
        ("video", video, "video/webm;codecs=h264"),
        ("audio", audio, "audio/webm;codecs=opus"),
    ):
        writer = await storage.open_writer(SID, name, mime, 1_760_000_000_000.0)
        await writer.send(0, path.read_bytes(), finish=True)
        async for ack in writer.acks():
            if ack.finished:
                break
        writer.cancel()
    await storage.update_session(
        pb.UpdateSessionRequest(session_id=SID, state=pb.SESSION_STATE_QUEUED)
    )


@pytest.fixture
def storage_settings(tmp_path: Path) -> Settings:
    """Storage's (the `storage` fixture's server), with room for a whole recording."""
    return Settings(data_dir=tmp_path / "data", storage_addr=f"127.0.0.1:{free_port()}")


@pytest.fixture
def gate(tmp_path: Path) -> ExtrasGate:
    return ExtrasGate(tmp_path)


@pytest.fixture
def settings(storage_settings: Settings, gate: ExtrasGate, tmp_path: Path) -> Settings:
    scratch = tmp_path / "scratch"
    scratch.mkdir(mode=0o700)
    return storage_settings.model_copy(
        update={
            "ffmpeg": str(gate.script),
            "scratch_dir": scratch,
            "hls_min_duration": timedelta(0),
        }
    )


async def test_the_session_is_ready_before_its_extras_and_lists_each_as_it_lands(
    storage: StorageClient,
    settings: Settings,
    gate: ExtrasGate,
    h264_webm: Path,
    opus_webm: Path,
    tmp_path: Path,
) -> None:
    await queued_recording(storage, h264_webm, opus_webm)
    compile_task = asyncio.create_task(compile_session(storage, SID, settings, OutputOptions()))
    try:
        await eventually(lambda: asyncio.to_thread(gate.reached.exists), "the extras to start")
        session = await storage.get_session(SID)
        # Ready with its MP4 and metadata while the extras are still being made.
        assert session.state == pb.SESSION_STATE_READY, pb.SessionState.Name(session.state)
        assert session.output.size > 0 and session.output.video_codec == "h264"
        assert session.output.duration_seconds > 0 and session.progress == 1.0
        assert not session.named_outputs
        assert not compile_task.done()
        mp4 = tmp_path / "ready.mp4"
        await storage.download(SID, "output", mp4)
        assert mp4.stat().st_size == session.output.size

        gate.open()
        assert await asyncio.wait_for(compile_task, 120) == EXIT_OK
    finally:
        gate.open()
        if not compile_task.done():
            compile_task.cancel()
    after = await storage.get_session(SID)
    assert after.state == pb.SESSION_STATE_READY and after.output == session.output
    assert EXTRAS <= {o.name for o in after.named_outputs}
    assert all(o.size > 0 and o.etag for o in after.named_outputs)


async def test_extras_refused_after_ready_end_the_compile_quietly(
    storage: StorageClient,
    settings: Settings,
    gate: ExtrasGate,
    h264_webm: Path,
    opus_webm: Path,
) -> None:
    """The MP4 is the product: once the session is `ready`, storage refusing an extra (here
    the session was deleted meanwhile) is logged, not a failed or retried compile."""
    await queued_recording(storage, h264_webm, opus_webm)
    compile_task = asyncio.create_task(compile_session(storage, SID, settings, OutputOptions()))
    try:
        await eventually(lambda: asyncio.to_thread(gate.reached.exists), "the extras to start")
        assert (await storage.get_session(SID)).state == pb.SESSION_STATE_READY
        await storage.delete_session(SID)
        gate.open()
        assert await asyncio.wait_for(compile_task, 120) == EXIT_OK
    finally:
        gate.open()
        if not compile_task.done():
            compile_task.cancel()
