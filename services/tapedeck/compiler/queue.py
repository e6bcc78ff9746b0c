"""Moving a session to `queued`: the one compare-and-set shared by the api and the operator.

`lifecycle.decide_compile` says what a compile request means for a session; this applies it
to storage. Whoever wins the compare-and-set starts the compile (the local worker, or a
Kubernetes Job); a concurrent request sees the state the winner left and starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tapedeck._proto import storage_pb2 as pb
from tapedeck.lifecycle import CompileVerdict, SessionFacts, decide_compile
from tapedeck.sessions import State
from tapedeck.storage.client import StorageClient
from tapedeck.storage.errors import Conflict
from tapedeck.storage.records import PB_TO_STATE
from tapedeck.storage.session_client import SessionClient

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
    allowed = [State.RECORDED, State.FAILED]
    if verdict == CompileVerdict.FINALIZE_AND_QUEUE:
        allowed.append(State.RECORDING)
    try:
        await SessionClient(storage).transition(
            session.id,
            State.QUEUED,
            allowed,
            progress=0.0,
            error="",
            compile_attempts=0,
            finish_tracks=verdict == CompileVerdict.FINALIZE_AND_QUEUE,
        )
    except Conflict:
        return None
    return CompileRequest(verdict, State.QUEUED, queued=True)


async def withdraw_compile(storage: StorageClient, session: pb.Session) -> None:
    """Undo a `request_compile` whose compile could not be started (the Kubernetes API was
    away): the session goes back to where it was, so asking again queues it and starts the
    compile, rather than finding it `queued` with nobody to compile it. If someone started it
    meanwhile (it left `queued`), it is left alone."""
    back = State.FAILED if session.state == pb.SESSION_STATE_FAILED else State.RECORDED
    try:
        await SessionClient(storage).transition(
            session.id,
            back,
            (State.QUEUED,),
            progress=session.progress,
            error=session.error,
            compile_attempts=session.compile_attempts,
        )
    except Conflict:
        pass
