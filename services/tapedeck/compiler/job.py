"""`tapedeck compile ID`: one compile, storage in and storage out over gRPC.

This is the whole job of a Kubernetes compile pod and of the embedded worker's child
process. The session's state is the record of the outcome: `ready` with output metadata, or
`failed` with a readable message. `ready` comes as soon as the MP4 is published; the process
then makes the poster, storyboard and HLS and uploads each (best effort: a compile that dies
after `ready` leaves them missing, never the session unready). A storage outage before
`ready` exits with EX_TEMPFAIL and leaves the session `compiling`, so whoever runs us retries
(bounded) rather than recording a failure.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.exits import EXIT_FAILED, EXIT_OK, EXIT_RETRY
from tapedeck.compiler.extras import want_hls
from tapedeck.compiler.livemux import LiveMux
from tapedeck.compiler.media import MediaInfo
from tapedeck.compiler.plan import OutputOptions, PlanError
from tapedeck.compiler.probe import ProbeError
from tapedeck.compiler.run import (
    CompileError,
    CompileResult,
    RunningStage,
    compile_files,
    write_extras,
)
from tapedeck.compiler.scratch import run_directory
from tapedeck.processes import tune_malloc_for_bulk_io
from tapedeck.sessions import State, is_valid_session_id
from tapedeck.settings import Settings
from tapedeck.storage import replicas
from tapedeck.storage.client import StorageClient
from tapedeck.storage.errors import Conflict, NotFound, StorageError, Superseded
from tapedeck.storage.session_client import SessionClient

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 0.5


def output_path(scratch: Path, session_id: str) -> Path:
    """Where a compile writes its MP4 (stage outputs go beside it, named after it)."""
    return scratch / f"{session_id}.mp4"


class Prepared(Protocol):
    """What `compiler.follow` made while the session was recording."""

    @property
    def scratch(self) -> Path: ...

    @property
    def inputs(self) -> list[tuple[str, Path, float]]:
        """(track, local file, started_at) of every track with bytes."""

    @property
    def running(self) -> Mapping[str, RunningStage]:
        """Stages started while recording, by kind."""

    @property
    def ahead(self) -> LiveMux | None:
        """The final mux started while recording, uploading as it grows."""

    def matches(self, session: pb.Session) -> bool:
        """Every track of `session` is complete in `inputs`, byte for byte."""

    async def infos(self) -> Mapping[str, MediaInfo]: ...

    def discard(self) -> None: ...


async def compile_session(
    storage: StorageClient,
    session_id: str,
    settings: Settings,
    options: OutputOptions,
    prepared: Prepared | None = None,
) -> int:
    sessions = SessionClient(storage)
    try:
        session = await sessions.begin_compile(session_id)
    except Conflict as err:
        log.info(
            "session %s is not waiting for a compile (%s); nothing to do", session_id, err.message
        )
        return EXIT_OK
    # Everything this compile writes carries its generation: once a newer compile began (a
    # retry, a second process), storage refuses this one's progress, output and outcome.
    generation = session.compile_generation
    log.info(
        "compiling %s (attempt %d, compile %d)", session_id, session.compile_attempts, generation
    )

    last_report = 0.0

    async def report(fraction: float) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL and fraction < 1.0:
            last_report = now
            await sessions.update(
                session_id, from_=(State.COMPILING,), generation=generation, progress=fraction
            )

    phases: dict[str, float] = {}
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    with contextlib.ExitStack() as cleanup:
        if prepared is not None and prepared.matches(session):
            scratch = prepared.scratch
            inputs = prepared.inputs
            infos: Mapping[str, MediaInfo] | None = await prepared.infos()
            running: Mapping[str, RunningStage] | None = prepared.running
            ahead = prepared.ahead
        else:
            if prepared is not None:
                log.info(
                    "%s: what was prepared while recording is stale; compiling anew", session_id
                )
                prepared.discard()
            # Inside a follower's own run directory when there is one (same pid, same name).
            root = prepared.scratch if prepared is not None else settings.scratch_root()
            scratch = cleanup.enter_context(run_directory(root, session_id))
            inputs = []
            for track in session.tracks:
                if track.committed_size > 0:
                    path = scratch / f"{track.name}.webm"
                    await storage.download(session_id, track.name, path)
                    inputs.append((track.name, path, track.started_at))
            infos = running = ahead = None
        phase("inputs")
        output = output_path(scratch, session_id)
        try:
            result = await compile_files(
                settings.ffmpeg_path(),
                inputs,
                output,
                options,
                report,
                infos=infos,
                running=running,
                ahead=ahead,
            )
        except (CompileError, ProbeError, PlanError) as err:
            log.warning("compile of %s failed: %s", session_id, err)
            failed = await sessions.mark_failed(
                session_id, str(err) or repr(err), (State.COMPILING,), generation
            )
            if failed is None:
                log.info("compile of %s stopped: a newer compile began, or it settled", session_id)
                return EXIT_OK
            return EXIT_FAILED
        phase("ffmpeg")
        if ahead is not None and await ahead.publish(generation):
            log.info("%s: published the MP4 uploaded while recording", session_id)
        else:
            await storage.upload_output(session_id, output, generation)
        phase("upload")
        # `ready` as soon as the MP4 is published: it is what the user waits for. The extras
        # follow, made from it by this process and fenced by the same generation; each is
        # listed as it lands (docs/decisions.md, "Ready first").
        await sessions.transition(
            session_id,
            State.READY,
            (State.COMPILING,),
            generation=generation,
            progress=1.0,
            output=pb.Output(
                duration_seconds=result.duration_seconds,
                video_codec=result.video_codec or "",
                audio_codec=result.audio_codec or "",
            ),
        )
        phase("ready")
        log.info(
            "%s is ready: %d bytes, %.2f s of media (%s); making the extras",
            session_id,
            result.size,
            result.duration_seconds,
            summarize(phases),
        )
        hls = want_hls(
            result.duration_seconds, options.hls, settings.hls_min_duration.total_seconds()
        )
        try:
            await add_extras(
                storage,
                session_id,
                generation,
                settings.ffmpeg_path(),
                output,
                result,
                hls,
                scratch,
                phase,
            )
        except StorageError as err:
            # Best effort, like the extras themselves: the session is `ready` with its MP4,
            # so a refusal (deleted, expired) or an outage ends this compile, not the session.
            log.warning("the extras of %s stopped: %s", session_id, err.message)
    log.info(
        "compiled %s: %d bytes, %.2f s of media (%s; %s)",
        session_id,
        result.size,
        result.duration_seconds,
        result.summary,
        summarize(phases),
    )
    return EXIT_OK


def summarize(phases: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in phases.items())


async def add_extras(
    storage: StorageClient,
    session_id: str,
    generation: int,
    ffmpeg: str,
    mp4: Path,
    result: CompileResult,
    hls: bool,
    scratch: Path,
    phase: Callable[[str], None],
) -> None:
    """Poster, storyboard and HLS of a `ready` session, each uploaded as it is made (the
    playlist after its parts, the storyboard's index after its sprite: `write_extras`'s
    order), so the session lists them one by one and never names a part it lacks."""
    extras = await write_extras(
        ffmpeg, mp4, result.duration_seconds, result.video_codec is not None, hls, scratch
    )
    phase("extras")
    for name, path in extras:
        await storage.upload_output(session_id, path, generation, name)
    phase("extras upload")


async def main(session_id: str, settings: Settings, options: OutputOptions | None = None) -> int:
    if not is_valid_session_id(session_id):  # it becomes a scratch path
        log.error("invalid session id %r", session_id[:80])
        return EXIT_FAILED
    tune_malloc_for_bulk_io()
    async with replicas.connect(settings) as storage:
        try:
            return await compile_session(storage, session_id, settings, options or OutputOptions())
        except StorageError as err:
            return exit_code(session_id, err)


def exit_code(session_id: str, err: StorageError) -> int:
    """How a compile that storage stopped ends: a session that moved on (a newer compile
    began, it was deleted or expired) needs nothing more; an outage is worth a retry."""
    if isinstance(err, NotFound):
        log.error("session %s not found", session_id)
        return EXIT_FAILED
    if isinstance(err, Conflict) and not isinstance(err, Superseded):  # not an upload cut short
        log.info("compile of %s stopped: %s", session_id, err.message)
        return EXIT_OK
    log.error("storage error while compiling %s: %s", session_id, err.message)
    return EXIT_RETRY
