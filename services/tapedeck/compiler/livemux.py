"""The final mux while recording: the one-shot command on live tracks, uploaded as it grows.

When the video is stream-copied (H.264, the common Chromium case), the whole compile is one
cheap FFmpeg: copy the video, encode the audio to AAC. A follower (compiler/follow.py) runs
exactly that command while the session records, fed by the growing tracks through pipes, with
one change: `-moov_size` instead of `+faststart`. FFmpeg then reserves the index's space at
the front, writes the media sequentially, and at the end seeks back once to write the index
(moov) and the media box's size into that head. Everything after the head is final as soon
as it is written, so it goes to storage as it grows (an output written ahead of its compile,
docs/storage.md); after stop only the last second, the index and one rewrite of the head are
left, whatever the recording's length. Reading the same bytes, FFmpeg makes the same packets
whether fed through a pipe or from the file (tests/compiler/test_livemux.py).

A mux that is replaced or fails writes its own file (`.live-*` beside the plan's), so two
FFmpegs never share one. The reserve must hold the index, which grows with the length (~1 KiB
per second of media); too small and FFmpeg fails at the end. So a live mux covers a length,
and the follower starts a new one with four times the reserve when the recording nears it
(the catch-up is a stream copy plus an audio encode, far faster than real time). A mux that
fails for any reason is simply not used: the compile runs the one-shot command on the files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc

from tapedeck.compiler.plan import CompilePlan
from tapedeck.compiler.run import CompileError, run_args
from tapedeck.sessions import OUTPUT
from tapedeck.storage.client import StorageClient, StorageError, TrackWriter

log = logging.getLogger(__name__)

INDEX_BYTES_PER_SECOND = 2048
"""Generous: 60 fps video and 48 kHz AAC, variable frame durations, take about 1 KiB."""
FIRST_COVER_SECONDS = 120.0
GROWTH = 4
NEAR = 0.75  # a new mux starts once the media reaches this share of what the reserve covers
UPLOAD_CHUNK = 4 * 1024 * 1024
UPLOAD_POLL = 0.2
FEED_CHUNK = 1024 * 1024


def reserve_for(seconds: float) -> int:
    """Bytes of head to reserve for an index of `seconds` of media."""
    return 64 * 1024 + int(seconds * INDEX_BYTES_PER_SECOND)


def live_args(
    plan: CompilePlan, pipes: Mapping[str, int], reserve: int, output: str | None = None
) -> tuple[str, ...]:
    """The one-shot command of `plan`, reading each track path from `pipe:FD` (`pipes`: path →
    descriptor), reserving `reserve` bytes for the index instead of a second pass, and
    writing to `output` (default: the plan's)."""
    if plan.stage("video") is not None:
        raise ValueError("the video is encoded: its stages run while recording instead")
    args = list(plan.args)
    for i, arg in enumerate(args[:-1]):
        if arg == "-i" and args[i + 1] in pipes:
            args[i + 1] = f"pipe:{pipes[args[i + 1]]}"
    at = args.index("-movflags")
    if args[at + 1] != "+faststart":
        raise ValueError(f"unexpected -movflags {args[at + 1]!r}")
    args[at : at + 2] = ["-moov_size", str(reserve)]
    if output is not None:
        assert args[-1] == plan.output_path
        args[-1] = output
    return tuple(args)


def head_end(prefix: bytes) -> int | None:
    """Where the bytes FFmpeg fills in at the end stop: just past the media box's header (its
    size, and the placeholder before it that becomes a 64-bit size). None: no `mdat` box in
    `prefix` yet."""
    pos = 0
    while pos + 8 <= len(prefix):
        size, kind = struct.unpack(">I4s", prefix[pos : pos + 8])
        if kind == b"mdat":
            return pos + 16
        if size == 1:
            if pos + 16 > len(prefix):
                return None
            size = struct.unpack(">Q", prefix[pos + 8 : pos + 16])[0]
        if size < 8:
            return None  # 0 ("to the end") or damaged: not a box before the media
        pos += size
    return None


ReadBlocking = Callable[[int, int], bytes]
"""A growing track: up to n bytes at pos, waiting for them; b"" once it is complete."""


class LiveMux:
    """One run of the final mux on live tracks, and its upload as it grows."""

    def __init__(
        self,
        ffmpeg: str,
        plan: CompilePlan,
        tracks: Mapping[str, ReadBlocking],
        storage: StorageClient,
        session_id: str,
        generation: int,
        cover_seconds: float,
    ) -> None:
        """`tracks`: each input path of `plan` → its growing track."""
        self.plan, self.cover_seconds = plan, cover_seconds
        self.storage, self.session_id, self.generation = storage, session_id, generation
        # Its own file: a mux it replaces may still be writing its own until it is killed.
        self.path = Path(f"{plan.output_path}.live-{cover_seconds:g}")
        self.seconds = 0.0
        self.head: bytes | None = None
        self.uploaded = 0
        self._writer: TrackWriter | None = None
        self._acks: asyncio.Task[int] | None = None
        self._upload_failed = False
        pipes: dict[str, int] = {}
        ends: list[tuple[ReadBlocking, int]] = []
        for path, read in tracks.items():
            r, w = os.pipe()
            pipes[path], ends = r, [*ends, (read, w)]
        self.args = live_args(plan, pipes, reserve_for(cover_seconds), str(self.path))
        self._feeders = [
            threading.Thread(target=_feed, args=(read, w), daemon=True, name="live-mux-feed")
            for read, w in ends
        ]
        readers = tuple(pipes.values())
        self._mux = asyncio.create_task(self._run(ffmpeg, readers))
        for feeder in self._feeders:
            feeder.start()
        self._upload = asyncio.create_task(self._upload_growing())

    @property
    def done(self) -> bool:
        return self._mux.done()

    @property
    def near_cover(self) -> bool:
        return self.seconds >= self.cover_seconds * NEAR

    def matches(self, plan: CompilePlan) -> bool:
        return plan.args == self.plan.args

    async def _run(self, ffmpeg: str, readers: Sequence[int]) -> None:
        def at(seconds: float) -> None:
            self.seconds = seconds

        try:
            await run_args(
                ffmpeg,
                self.args,
                feed=None,
                background=True,
                finish_progress=False,
                pass_fds=readers,
                on_seconds=at,
            )
        finally:
            for fd in readers:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _upload_growing(self) -> None:
        """Sends what FFmpeg wrote, as it writes it (the head too, filled in later)."""
        writer = await self.storage.open_writer(
            self.session_id, OUTPUT, compile_generation=self.generation
        )
        self._writer = writer
        self._acks = asyncio.create_task(_final_ack(writer))
        while True:
            finished = self._mux.done()
            size = await asyncio.to_thread(_size, self.path)
            while self.uploaded < size:
                chunk = await asyncio.to_thread(
                    _pread, self.path, self.uploaded, min(UPLOAD_CHUNK, size - self.uploaded)
                )
                await writer.send(self.uploaded, chunk)
                self.uploaded += len(chunk)
            if finished:
                return
            await asyncio.sleep(UPLOAD_POLL)

    async def wait(self) -> None:
        """The MP4 is complete on disk and, but for its head, in storage; raises
        CompileError when this mux cannot be used (the compile then runs on the files)."""
        await self._mux  # CompileError: e.g. an index larger than the reserve
        try:
            await self._upload
        except StorageError as err:  # the file is still good: it is uploaded whole instead
            log.info("%s: the live upload stopped: %s", self.session_id, err.message)
            self._upload_failed = True
        prefix = await asyncio.to_thread(
            _pread, self.path, 0, reserve_for(self.cover_seconds) + 4096
        )
        end = head_end(prefix)
        if end is None:
            raise CompileError("the live mux wrote no media box where expected")
        self.head = prefix[:end]
        await asyncio.to_thread(os.replace, self.path, self.plan.output_path)

    async def publish(self, generation: int) -> bool:
        """Fills the head in and publishes: True when storage took it as compile
        `generation`'s output (False: upload the file instead)."""
        if self.head is None or self._writer is None or self._acks is None:
            return False
        if self._upload_failed:
            return False
        if generation != self.generation:
            log.info("%s: the live upload was for compile %d", self.session_id, self.generation)
            return False
        try:
            pieces = range(0, len(self.head), UPLOAD_CHUNK)  # storage takes ≤ 8 MiB a message
            for at in pieces:
                piece = self.head[at : at + UPLOAD_CHUNK]
                await self._writer.send(at, piece, finish=at == pieces[-1])
            size = await self._acks
        except StorageError as err:
            log.info("%s: the live upload was refused: %s", self.session_id, err.message)
            return False
        return size == self.uploaded

    def cancel(self) -> None:
        """Stops it; its file goes once FFmpeg is gone."""
        self._mux.cancel()
        self._mux.add_done_callback(lambda _task: self.path.unlink(missing_ok=True))
        self._upload.cancel()
        if self._acks is not None:
            self._acks.cancel()
        if self._writer is not None:
            self._writer.cancel()


async def _final_ack(writer: TrackWriter) -> int:
    async for ack in writer.acks():  # drained as we go so acks never block the stream
        if ack.finished:
            return ack.committed_size
    raise StorageError.of(grpc.StatusCode.ABORTED, "output upload ended early")


def _feed(read: ReadBlocking, fd: int) -> None:
    """Copies a growing track into the mux's pipe until it is complete (or the mux is gone)."""
    pos = 0
    try:
        while data := read(pos, FEED_CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            pos += len(data)
    except OSError:
        pass  # FFmpeg stopped reading: its exit status says why
    finally:
        os.close(fd)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _pread(path: Path, offset: int, n: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), n, offset)
