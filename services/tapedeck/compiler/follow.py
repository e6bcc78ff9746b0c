"""Compile while recording: `python -m tapedeck.compiler.follow SESSION_ID`.

The embedded worker starts one of these for a session that is recording (a bounded number at
once). It mirrors every track from storage into scratch space as storage commits it, probes
each track as it streams in, and, as soon as the first seconds say what the tracks contain,
starts the compile's stages (each stream that must be encoded, see `plan.Stage`) on FFmpegs
fed through a pipe while the recording goes on, at a lower CPU priority than ingest.

When the session is queued for its compile, this process runs the ordinary compile
(`job.compile_session`, the same code as `tapedeck compile`) on what it has: the tracks are
already local, the probes done, and the stages have only the last seconds left to encode; the
compile checks that its own plan is exactly the one the stages were started with, and runs
anything else from scratch. Stages produce the same packets whether fed live or from the
file, so the MP4 is the one a one-shot compile makes (tests/compiler/test_follow.py).

Storage stays the only way in: nothing here assumes that it shares a disk with us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.exits import EXIT_OK
from tapedeck.compiler.job import compile_session, exit_code, output_path
from tapedeck.compiler.livemux import FIRST_COVER_SECONDS, GROWTH, LiveMux
from tapedeck.compiler.media import MediaInfo
from tapedeck.compiler.plan import (
    CompilePlan,
    OutputOptions,
    PlanError,
    TrackInput,
    plan_compile,
)
from tapedeck.compiler.probe import ProbeError, probe, probe_stream
from tapedeck.compiler.run import RunningStage, run_args
from tapedeck.compiler.scratch import make_run_dir, remove_tree
from tapedeck.processes import tune_malloc_for_bulk_io
from tapedeck.sessions import State, is_valid_session_id
from tapedeck.settings import Settings, get_settings
from tapedeck.storage import replicas
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.errors import NotFound
from tapedeck.storage.records import PB_TO_STATE

log = logging.getLogger(__name__)

POLL_RECORDING = 0.5  # seconds between looks at storage while the tracks grow
POLL_WAITING = 0.05  # once recorded: the delay between the compile request and its start
LINGER = 600.0  # how long a recorded session may wait for its compile request
PROBE_AFTER = 4096  # bytes a track needs before its codecs are worth probing
GIVE_UP_AFTER = 8 * 1024 * 1024  # a track this long that still does not probe is not media
FEED_CHUNK = 1024 * 1024


class Mirror:
    """A local copy of one track that grows as storage commits it.

    Appends come from the event loop; readers are stage feeders (async) and the streaming
    probe (a thread), each with its own position, each told when there is more or no more.
    """

    def __init__(self, name: str, path: Path, started_at: float) -> None:
        self.name, self.path, self.started_at = name, path, started_at
        self.size = 0
        self.complete = False
        self._file = open(path, "wb", buffering=0)  # closed by finish()
        self._cond = threading.Condition()
        self._grew = asyncio.Event()

    def current_size(self) -> int:
        return self.size

    def append(self, data: bytes) -> None:
        self._file.write(data)
        with self._cond:
            self.size += len(data)
            self._cond.notify_all()
        self._grew.set()

    def finish(self) -> None:
        """No more bytes (the track is finished, or we stop following it)."""
        with self._cond:
            self.complete = True
            self._cond.notify_all()
        self._grew.set()
        with contextlib.suppress(OSError):
            self._file.close()

    def read_blocking(self, pos: int, n: int) -> bytes:
        """Up to `n` bytes at `pos`, waiting for them; b"" at the end of a complete track."""
        with self._cond:
            self._cond.wait_for(lambda: self.size > pos or self.complete)
            available = self.size - pos
        if available <= 0:
            return b""
        with open(self.path, "rb") as f:
            return os.pread(f.fileno(), min(n, available), pos)

    async def feed(self, stdin: asyncio.StreamWriter) -> None:
        """Writes the whole track to `stdin` as it arrives (then the caller closes it)."""
        pos = 0
        with open(self.path, "rb") as f:  # noqa: ASYNC230 -- local scratch, page cache
            while True:
                if pos < self.size:
                    data = os.pread(f.fileno(), min(FEED_CHUNK, self.size - pos), pos)
                    stdin.write(data)
                    await stdin.drain()
                    pos += len(data)
                    continue
                if self.complete:
                    return
                self._grew.clear()
                await self._grew.wait()


class _Reader:
    """A file-like object over a growing mirror for PyAV (no `seek`: read front to back)."""

    def __init__(self, mirror: Mirror) -> None:
        self._mirror, self._pos = mirror, 0

    def read(self, n: int = -1) -> bytes:
        data = self._mirror.read_blocking(self._pos, n if n > 0 else FEED_CHUNK)
        self._pos += len(data)
        return data


class Follower:
    """Follows one recording session until its compile (see the module docstring)."""

    def __init__(
        self,
        storage: StorageClient,
        session_id: str,
        settings: Settings,
        options: OutputOptions,
        scratch: Path,
    ) -> None:
        self.storage, self.session_id = storage, session_id
        self.settings, self.options = settings, options
        self.scratch = scratch
        self.mirrors: dict[str, Mirror] = {}
        self.probes: dict[str, asyncio.Future[MediaInfo]] = {}
        self.stages: dict[str, RunningStage] = {}
        self.planned: frozenset[str] | None = None
        self.speculate = True
        self.live: LiveMux | None = None
        self.next_generation = 0  # the compile generation the next compile will get

    # --- job.Prepared ------------------------------------------------------------------------

    @property
    def running(self) -> Mapping[str, RunningStage]:
        return self.stages

    @property
    def ahead(self) -> LiveMux | None:
        return self.live

    @property
    def inputs(self) -> list[tuple[str, Path, float]]:
        return [(m.name, m.path, m.started_at) for m in self.mirrors.values() if m.size > 0]

    def matches(self, session: pb.Session) -> bool:
        committed = {t.name: t.committed_size for t in session.tracks if t.committed_size > 0}
        mirrored = {m.name: m.size for m in self.mirrors.values() if m.size > 0}
        return committed == mirrored and all(m.complete for m in self.mirrors.values())

    async def infos(self) -> Mapping[str, MediaInfo]:
        infos: dict[str, MediaInfo] = {}
        for name, _path, _started in self.inputs:
            try:
                infos[name] = await self.probes[name]
            except ProbeError as exc:
                raise ProbeError(f"{name} track: {exc}") from exc
        return infos

    def discard(self) -> None:
        for stage in self.stages.values():
            stage.cancel()
        self.stages = {}
        if self.live is not None:
            self.live.cancel()
            self.live = None

    # --- following ---------------------------------------------------------------------------

    async def run(self) -> int:
        recorded_at: float | None = None
        while True:
            try:
                session = await self.storage.get_session(self.session_id)
            except NotFound:
                return EXIT_OK  # deleted: nothing to compile
            state = PB_TO_STATE[session.state]
            if state not in (State.RECORDING, State.RECORDED, State.QUEUED):
                log.info("%s is %s: stop following", self.session_id, state.value)
                return EXIT_OK  # compiled, compiling elsewhere, failed or expired
            self.next_generation = session.compile_generation + 1
            await self._mirror(session, final=state != State.RECORDING)
            if state == State.QUEUED:
                if self.matches(session):
                    log.info("%s: compile requested; finishing what was prepared", self.session_id)
                    return await compile_session(
                        self.storage, self.session_id, self.settings, self.options, self
                    )
                await asyncio.sleep(POLL_WAITING)
                continue
            if self.speculate and not self.stages and self.live is None:
                await self._start_stages()
            elif self.live is not None and self.live.near_cover and not self.live.done:
                self._start_live(self.live.plan, self.live.cover_seconds * GROWTH)
            if state == State.RECORDED:
                recorded_at = recorded_at or time.monotonic()
                if time.monotonic() - recorded_at > LINGER:
                    log.info("%s: no compile request; stop following", self.session_id)
                    return EXIT_OK
            else:
                recorded_at = None
            await asyncio.sleep(POLL_RECORDING if state == State.RECORDING else POLL_WAITING)

    async def _mirror(self, session: pb.Session, final: bool) -> None:
        """Copies what storage committed since the last look. `final`: the session no longer
        records, so its committed sizes are the tracks' final sizes."""
        for track in session.tracks:
            mirror = self.mirrors.get(track.name)
            if mirror is None:
                mirror = Mirror(track.name, self.scratch / f"{track.name}.webm", track.started_at)
                self.mirrors[track.name] = mirror
                self.probes[track.name] = asyncio.ensure_future(
                    asyncio.to_thread(
                        probe_stream,
                        _Reader(mirror),
                        mirror.path.name,
                        str(mirror.path),
                        mirror.current_size,
                    )
                )
                if self.planned is not None:  # a track that came late changes the plan
                    self.discard()
                    self.planned = None
            if mirror.complete:
                continue
            if track.committed_size > mirror.size:
                async for chunk in self.storage.read(
                    self.session_id, track.name, mirror.size, track.committed_size - mirror.size
                ):
                    mirror.append(chunk)
            if (track.finished or final) and mirror.size >= track.committed_size:
                mirror.finish()

    async def _start_stages(self) -> None:
        """Plan from the first bytes of every track and start the stages on live pipes."""
        if not self.mirrors or self.planned is not None:
            return
        if any(m.size < PROBE_AFTER and not m.complete for m in self.mirrors.values()):
            return
        try:
            tracks = await asyncio.to_thread(self._probe_prefixes)
        except ProbeError:
            if any(m.size > GIVE_UP_AFTER for m in self.mirrors.values()):
                log.info("%s: tracks do not probe; no speculative compile", self.session_id)
                self.speculate = False
            return
        if tracks is None:
            return  # some stream has no packet yet: wait for more
        partial = output_path(self.scratch, self.session_id)
        try:
            plan = plan_compile(
                tracks, str(partial.with_name(f"{partial.name}.part")), self.options
            )
        except PlanError:
            self.speculate = False
            return
        self.planned = frozenset(self.mirrors)
        if plan.stage("video") is None:  # a stream copy: the whole compile runs live
            self._start_live(plan, FIRST_COVER_SECONDS)
            log.info(
                "%s: compiling while recording, the final mux (%s): %s",
                self.session_id,
                ", ".join(f"{m.name} {m.size} B" for m in self.mirrors.values()),
                plan.summary,
            )
            return
        ffmpeg = self.settings.ffmpeg_path()
        for stage in plan.stages:
            mirror = self.mirrors[stage.track]
            task = asyncio.create_task(
                run_args(
                    ffmpeg,
                    stage.args("pipe:0"),
                    feed=mirror.feed,
                    background=True,
                    finish_progress=False,
                )
            )
            task.add_done_callback(_quiet)
            self.stages[stage.kind] = RunningStage(stage, task)
        log.info(
            "%s: compiling while recording (%s): %s",
            self.session_id,
            ", ".join(f"{m.name} {m.size} B" for m in self.mirrors.values()),
            plan.summary,
        )

    def _start_live(self, plan: CompilePlan, cover_seconds: float) -> None:
        """(Re)starts the final mux from the tracks' first byte; a restart reserves a bigger
        head for a recording that outgrew the last one (compiler/livemux.py)."""
        if self.live is not None:
            self.live.cancel()
        inputs = set(plan.args)
        tracks = {str(m.path): m.read_blocking for m in self.mirrors.values()}
        self.live = LiveMux(
            self.settings.ffmpeg_path(),
            plan,
            {path: read for path, read in tracks.items() if path in inputs},
            self.storage,
            self.session_id,
            self.next_generation,
            cover_seconds,
        )

    def _probe_prefixes(self) -> list[TrackInput] | None:
        tracks = []
        for mirror in list(self.mirrors.values()):
            if mirror.size == 0:
                continue
            info = probe(mirror.path)
            if not all(s.usable for s in info.streams):
                return None
            tracks.append(TrackInput(mirror.name, str(mirror.path), mirror.started_at, info))
        return tracks

    def close(self) -> None:
        self.discard()
        for mirror in self.mirrors.values():
            mirror.finish()  # releases the probe threads
        for future in self.probes.values():
            future.cancel()


def _quiet(task: asyncio.Task[float]) -> None:
    """A speculative stage that failed is simply run again by the compile."""
    if not task.cancelled() and task.exception() is not None:
        log.info("speculative stage failed: %s", task.exception())


async def follow(session_id: str, settings: Settings, options: OutputOptions | None = None) -> int:
    tune_malloc_for_bulk_io()
    scratch = make_run_dir(settings.scratch_root(), session_id)
    follower: Follower | None = None
    try:
        async with replicas.connect(settings) as storage:
            follower = Follower(storage, session_id, settings, options or OutputOptions(), scratch)
            try:
                return await follower.run()
            except StorageError as err:
                return exit_code(session_id, err)
    finally:
        if follower is not None:
            follower.close()
        remove_tree(scratch)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m tapedeck.compiler.follow SESSION_ID")
    if not is_valid_session_id(args[0]):
        sys.exit(f"invalid session id {args[0][:80]!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(asyncio.run(follow(args[0], get_settings())))


if __name__ == "__main__":
    main()
