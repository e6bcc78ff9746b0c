"""Moving a session to `queued`: the one compare-and-set shared by the api and the operator.

`lifecycle.decide_compile` says what a compile request means for a session; this applies it
to storage. Whoever wins the compare-and-set starts the compile (the local worker, or a
Kubernetes Job); a concurrent request sees the state the winner left and starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from tapedeck._proto import storage_pb2 as pb
from tapedeck.lifecycle import CompileVerdict, SessionFacts, decide_compile
from tapedeck.sessions import State
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.records import PB_TO_STATE

QUEUEING = (CompileVerdict.QUEUE, CompileVerdict.FINALIZE_AND_QUEUE)


@dataclass(frozen=True)
class CompileRequest:
    verdict: CompileVerdict
    state: State
    """The session's state after the request (`queued` when this call queued it)."""
    queued: bool
    """This call moved the session to `queued`: its caller must start the compile."""


def facts(session: pb.Session) -> SessionFacts:
    return SessionFacts(
        state=PB_TO_STATE[session.state],
        writing=session.writing,
        recorded_bytes=sum(t.committed_size for t in session.tracks),
    )


async def request_compile(storage: StorageClient, session: pb.Session) -> CompileRequest:
    """Apply `decide_compile` to `session` (as just read from storage) with one CAS; when the
    session changed meanwhile (a concurrent request, a writer that reconnected), decide again
    on what storage holds now."""
    for _ in range(3):
        request = await _try_queue(storage, session)
        if request is not None:
            return request
        session = await storage.get_session(session.id)
    state = PB_TO_STATE[session.state]
    return CompileRequest(CompileVerdict.ALREADY, state, queued=False)


async def _try_queue(storage: StorageClient, session: pb.Session) -> CompileRequest | None:
    """One compare-and-set; None when storage refused it because the session changed."""
    state = PB_TO_STATE[session.state]
    verdict = decide_compile(facts(session))
    if verdict not in QUEUEING:
        return CompileRequest(verdict, state, queued=False)
    allowed = [pb.SESSION_STATE_RECORDED, pb.SESSION_STATE_FAILED]
    if verdict == CompileVerdict.FINALIZE_AND_QUEUE:
        allowed.append(pb.SESSION_STATE_RECORDING)
    try:
        await storage.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id,
                state=pb.SESSION_STATE_QUEUED,
                progress=0.0,
                error="",
                compile_attempts=0,
                if_state_in=allowed,
                finish_tracks=verdict == CompileVerdict.FINALIZE_AND_QUEUE,
            )
        )
    except StorageError as err:
        if err.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
        return None
    return CompileRequest(verdict, State.QUEUED, queued=True)


async def withdraw_compile(storage: StorageClient, session: pb.Session) -> None:
    """Undo a `request_compile` whose compile could not be started (the Kubernetes API was
    away): the session goes back to where it was, so asking again queues it and starts the
    compile, rather than finding it `queued` with nobody to compile it. If someone started it
    meanwhile (it left `queued`), it is left alone."""
    back = session.state if session.state == pb.SESSION_STATE_FAILED else pb.SESSION_STATE_RECORDED
    try:
        await storage.update_session(
            pb.UpdateSessionRequest(
                session_id=session.id,
                state=back,
                progress=session.progress,
                error=session.error,
                compile_attempts=session.compile_attempts,
                if_state_in=[pb.SESSION_STATE_QUEUED],
            )
        )
    except StorageError as err:
        if err.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
