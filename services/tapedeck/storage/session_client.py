"""Sessions in the domain's words, over the storage client.

Callers say what they mean (`transition(id, to, from_)`, `mark_failed`, `delete_if_exists`)
and catch storage/errors.py's `NotFound` / `Conflict`, rather than build `UpdateSession`
requests and match gRPC status codes. A refused compare-and-set is a `Conflict`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from tapedeck._proto import storage_pb2 as pb
from tapedeck.sessions import State
from tapedeck.storage import errors
from tapedeck.storage.client import StorageClient
from tapedeck.storage.records import STATE_TO_PB

COMPILE_PENDING = (State.QUEUED, State.COMPILING)
"""States of a session that waits for, or is in, a compile."""


def _states(states: Iterable[State]) -> list[pb.SessionState.ValueType]:
    return [STATE_TO_PB[s] for s in states]


class SessionClient:
    def __init__(self, storage: StorageClient) -> None:
        self.storage = storage

    async def get(self, session_id: str) -> pb.Session:
        """`NotFound` when there is no such session."""
        return await self.storage.get_session(session_id)

    async def get_or_none(self, session_id: str) -> pb.Session | None:
        try:
            return await self.storage.get_session(session_id)
        except errors.NotFound:
            return None

    async def create_or_get(
        self, session_id: str, ttl_seconds: int = 0, title: str = ""
    ) -> pb.Session:
        """The session, created unless it exists (a second creator finds the first's)."""
        try:
            return await self.storage.create_session(
                session_id, ttl_seconds=ttl_seconds, title=title
            )
        except errors.AlreadyExists:
            return await self.storage.get_session(session_id)

    async def delete_if_exists(self, session_id: str) -> bool:
        """False when it was already gone."""
        try:
            await self.storage.delete_session(session_id)
        except errors.NotFound:
            return False
        return True

    async def all(
        self, states: Iterable[State] = (), page_size: int = 500
    ) -> AsyncIterator[pb.Session]:
        """Every session (in `states`, if given), newest first, page by page."""
        token = ""
        wanted = _states(states)
        while True:
            page = await self.storage.list_sessions(page_size, token, wanted)
            for session in page.sessions:
                yield session
            token = page.next_page_token
            if not token:
                return

    async def update(
        self,
        session_id: str,
        *,
        from_: Iterable[State] | None = None,
        generation: int | None = None,
        state: State | None = None,
        progress: float | None = None,
        error: str | None = None,
        compile_attempts: int | None = None,
        expires_at_ms: int | None = None,
        output: pb.Output | None = None,
        finish_tracks: bool = False,
        begin_compile: bool = False,
        title: str | None = None,
    ) -> pb.Session:
        """`UpdateSession` with its conditions said plainly: `from_` the states the session
        must be in, `generation` the compile that must still be the newest; `Conflict` when
        either is not met. None leaves a field as it is."""
        request = pb.UpdateSessionRequest(
            session_id=session_id, finish_tracks=finish_tracks, begin_compile=begin_compile
        )
        if from_ is not None:
            states = _states(from_)
            if not states:  # on the wire, no states is no condition at all
                raise ValueError("from_ names no state: the condition could never be met")
            request.if_state_in.extend(states)
        if generation is not None:
            request.if_compile_generation = generation
        if state is not None:
            request.state = STATE_TO_PB[state]
        if progress is not None:
            request.progress = progress
        if error is not None:
            request.error = error
        if compile_attempts is not None:
            request.compile_attempts = compile_attempts
        if expires_at_ms is not None:
            request.expires_at_ms = expires_at_ms
        if output is not None:
            request.output.CopyFrom(output)
        if title is not None:
            request.title = title
        return await self.storage.update_session(request)

    async def transition(
        self,
        session_id: str,
        to: State,
        from_: Iterable[State],
        *,
        generation: int | None = None,
        progress: float | None = None,
        error: str | None = None,
        compile_attempts: int | None = None,
        output: pb.Output | None = None,
        finish_tracks: bool = False,
    ) -> pb.Session:
        """Move the session to `to` if it is in one of `from_` (and, with `generation`, that
        compile is still the newest); `Conflict` otherwise."""
        return await self.update(
            session_id,
            from_=from_,
            generation=generation,
            state=to,
            progress=progress,
            error=error,
            compile_attempts=compile_attempts,
            output=output,
            finish_tracks=finish_tracks,
        )

    async def mark_failed(
        self,
        session_id: str,
        error: str,
        from_: Iterable[State] = COMPILE_PENDING,
        generation: int | None = None,
    ) -> pb.Session | None:
        """The session is `failed` with `error`, unless it settled meanwhile (it left
        `from_`, or a newer compile than `generation` began): then None, and it is left
        alone. The one compare-and-set for every give-up (the embedded worker, the operator,
        a compile)."""
        try:
            return await self.transition(
                session_id, State.FAILED, from_, generation=generation, error=error
            )
        except errors.Conflict:
            return None

    async def begin_compile(self, session_id: str) -> pb.Session:
        """`compiling`, with a new compile generation; `Conflict` unless it waits for one."""
        return await self.update(session_id, from_=COMPILE_PENDING, begin_compile=True)

    async def finish_tracks(self, session_id: str) -> pb.Session:
        """A recording whose tracks are all closed (`recorded`); `Conflict` unless it was
        recording and nobody writes to it."""
        return await self.update(session_id, from_=(State.RECORDING,), finish_tracks=True)
