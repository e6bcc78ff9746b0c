"""`tapedeck compile ID`: one compile, storage in and storage out over gRPC.

This is the whole job of a Kubernetes compile pod and of the embedded worker's child
process. The session's state is the record of the outcome: `ready` with output metadata, or
`failed` with a readable message. A storage outage exits with EX_TEMPFAIL and leaves the
session `compiling`, so whoever runs us retries (bounded) rather than recording a failure.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import grpc

from tapedeck._proto import storage_pb2 as pb
from tapedeck.compiler.plan import OutputOptions, PlanError
from tapedeck.compiler.probe import ProbeError
from tapedeck.compiler.run import CompileError, compile_files
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the session is `failed`, with its error recorded
EXIT_RETRY = 75  # EX_TEMPFAIL: storage unreachable; run again later
PROGRESS_INTERVAL = 0.5


async def compile_session(
    storage: StorageClient, session_id: str, settings: Settings, options: OutputOptions
) -> int:
    session = await storage.get_session(session_id)
    try:
        session = await storage.update_session(
            pb.UpdateSessionRequest(
                session_id=session_id,
                state=pb.SESSION_STATE_COMPILING,
                progress=0.0,
                error="",
                compile_attempts=session.compile_attempts + 1,
                if_state_in=[pb.SESSION_STATE_QUEUED, pb.SESSION_STATE_COMPILING],
            )
        )
    except StorageError as err:
        if err.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        log.info(
            "session %s is not waiting for a compile (%s); nothing to do", session_id, err.message
        )
        return EXIT_OK
    log.info("compiling %s (attempt %d)", session_id, session.compile_attempts)

    last_report = 0.0

    async def report(fraction: float) -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= PROGRESS_INTERVAL and fraction < 1.0:
            last_report = now
            await storage.update_session(
                pb.UpdateSessionRequest(
                    session_id=session_id,
                    progress=fraction,
                    if_state_in=[pb.SESSION_STATE_COMPILING],
                )
            )

    with tempfile.TemporaryDirectory(prefix=f"tapedeck-{session_id}-") as scratch:
        inputs: list[tuple[str, Path, float]] = []
        for track in session.tracks:
            if track.committed_size > 0:
                path = Path(scratch) / f"{track.name}.webm"
                await storage.download(session_id, track.name, path)
                inputs.append((track.name, path, track.started_at))
        output = Path(scratch) / f"{session_id}.mp4"
        try:
            result = await compile_files(settings.ffmpeg_path(), inputs, output, options, report)
        except (CompileError, ProbeError, PlanError) as err:
            log.warning("compile of %s failed: %s", session_id, err)
            await storage.update_session(
                pb.UpdateSessionRequest(
                    session_id=session_id,
                    state=pb.SESSION_STATE_FAILED,
                    error=str(err) or repr(err),
                    if_state_in=[pb.SESSION_STATE_COMPILING],
                )
            )
            return EXIT_FAILED
        await storage.upload_output(session_id, output)
    await storage.update_session(
        pb.UpdateSessionRequest(
            session_id=session_id,
            state=pb.SESSION_STATE_READY,
            progress=1.0,
            output=pb.Output(
                duration_seconds=result.duration_seconds,
                video_codec=result.video_codec or "",
                audio_codec=result.audio_codec or "",
            ),
            if_state_in=[pb.SESSION_STATE_COMPILING],
        )
    )
    log.info("compiled %s: %d bytes, %.2f s", session_id, result.size, result.duration_seconds)
    return EXIT_OK


async def main(session_id: str, settings: Settings, options: OutputOptions | None = None) -> int:
    async with StorageClient(settings.storage_addr) as storage:
        try:
            return await compile_session(storage, session_id, settings, options or OutputOptions())
        except StorageError as err:
            if err.code == grpc.StatusCode.NOT_FOUND:
                log.error("session %s not found", session_id)
                return EXIT_FAILED
            log.error("storage error while compiling %s: %s", session_id, err.message)
            return EXIT_RETRY
