"""The final mux while recording (compiler/livemux.py): the one-shot command on growing
tracks, its MP4 uploaded to storage as it grows and its head filled in once at the end."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from media import ffmpeg_binary, make_opus_webm, packet_digest
from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.follow import Mirror
from tapedeck.compiler.livemux import LiveMux, head_end, live_args, reserve_for
from tapedeck.compiler.plan import TrackInput, plan_compile
from tapedeck.compiler.probe import probe
from tapedeck.compiler.run import compile_files
from tapedeck.storage.client import StorageClient

T0 = 1_760_000_000_000.0


def box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def test_head_end_is_past_the_media_box_header() -> None:
    head = box(b"ftyp", b"isom" * 4) + box(b"moov", bytes(100)) + box(b"free", b"")
    assert head_end(head + box(b"mdat", bytes(50))) == len(head) + 16
    assert head_end(head) is None  # the media box is not written yet
    assert head_end(struct.pack(">I4s", 0, b"moov")) is None  # "to the end": not a head


def test_live_args_read_pipes_and_reserve_the_index(h264_webm: Path, opus_webm: Path) -> None:
    tracks = [
        TrackInput("video", str(h264_webm), T0, probe(h264_webm)),
        TrackInput("audio", str(opus_webm), T0 + 250, probe(opus_webm)),
    ]
    plan = plan_compile(tracks, "/scratch/out.mp4.part")
    args = live_args(plan, {str(h264_webm): 7, str(opus_webm): 9}, 4096)
    assert "pipe:7" in args and "pipe:9" in args
    assert str(h264_webm) not in args and str(opus_webm) not in args
    assert "+faststart" not in args and args[args.index("-moov_size") + 1] == "4096"
    # Everything else is the one-shot command, in order.
    rest = [a for a in args if a not in ("pipe:7", "pipe:9", "-moov_size", "4096")]
    one_shot = [
        a for a in plan.args if a not in (str(h264_webm), str(opus_webm), "-movflags", "+faststart")
    ]
    assert rest == one_shot
    assert reserve_for(3600) > reserve_for(60) > 0


def test_live_args_refuse_a_plan_that_encodes_video(vp8_webm: Path) -> None:
    plan = plan_compile([TrackInput("video", str(vp8_webm), T0, probe(vp8_webm))], "/x.mp4")
    with pytest.raises(ValueError, match="encoded"):
        live_args(plan, {str(vp8_webm): 3}, 4096)


def boxes(data: bytes) -> list[bytes]:
    kinds, pos = [], 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        kinds.append(kind)
        pos += size or len(data)
    return kinds


async def grow(mirror: Mirror, source: Path, pieces: int = 12) -> None:
    """Over ~3 s, so FFmpeg reports its progress (every 0.5 s) while the tracks grow."""
    data = source.read_bytes()
    step = len(data) // pieces + 1
    for i in range(0, len(data), step):
        mirror.append(data[i : i + step])
        await asyncio.sleep(0.25)
    mirror.finish()


@pytest.mark.parametrize("cover_seconds", [120.0, 0.5, 4500.0])
async def test_the_mp4_muxed_and_uploaded_while_recording_is_the_one_shot_mp4(
    storage: StorageClient, h264_webm: Path, tmp_path: Path, cover_seconds: float
) -> None:
    """`cover_seconds` 0.5: the recording outgrows the reserve, and the follower's restart
    with a bigger one (four times, from the first byte) replaces the first mux and upload.
    4500: a head of 9 MiB, over storage's message limit, rewritten in pieces (a 60-min
    recording's reserve was refused whole: "Received message larger than max")."""
    opus = make_opus_webm(tmp_path / "opus.webm", 3.0)
    inputs = [("video", h264_webm, T0), ("audio", opus, T0 + 300)]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mirrors = {n: Mirror(n, scratch / f"{n}.webm", s) for n, _p, s in inputs}
    tracks = [TrackInput(n, str(mirrors[n].path), s, probe(p)) for n, p, s in inputs]
    out = scratch / "out.mp4"
    plan = plan_compile(tracks, str(out.with_name(f"{out.name}.part")))
    session = await storage.create_session()
    reads = {str(m.path): m.read_blocking for m in mirrors.values()}

    def start(cover: float) -> LiveMux:
        return LiveMux(
            ffmpeg_binary(), plan, reads, storage, session.id, session.compile_generation + 1, cover
        )

    live = start(cover_seconds)
    growing = asyncio.gather(*(grow(mirrors[n], p) for n, p, _s in inputs))
    while not growing.done():
        if live.near_cover and not live.done:
            live.cancel()
            live = start(live.cover_seconds * 4)
        await asyncio.sleep(0.05)
    await growing
    result = await compile_files(
        ffmpeg_binary(), [(n, m.path, m.started_at) for n, m in mirrors.items()], out, ahead=live
    )
    assert live.head is not None, "the compile used the live mux"
    assert cover_seconds < 4500 or len(live.head) > 8 * 1024 * 1024
    assert cover_seconds >= 1 or live.cover_seconds > cover_seconds, "the mux was restarted"
    await storage.update_session(
        pb.UpdateSessionRequest(session_id=session.id, state=pb.SESSION_STATE_QUEUED)
    )
    begun = await storage.update_session(
        pb.UpdateSessionRequest(session_id=session.id, begin_compile=True)
    )
    assert await live.publish(begun.compile_generation)
    stored = b"".join([c async for c in storage.read(session.id, "output")])
    assert stored == out.read_bytes() and len(stored) == result.size
    assert boxes(stored)[:2] == [b"ftyp", b"moov"] and b"mdat" in boxes(stored)
    want = tmp_path / "want.mp4"
    await compile_files(ffmpeg_binary(), inputs, want)
    assert packet_digest(out) == packet_digest(want)
