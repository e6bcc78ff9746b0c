"""HTTP routes of the api service (SPEC §5)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Annotated, Protocol

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from tapedeck import tokens
from tapedeck._proto import storage_pb2 as pb
from tapedeck.api import ranges
from tapedeck.api.auth import Auth
from tapedeck.api.errors import ApiError
from tapedeck.api.models import (
    CompileAccepted,
    CreatedSession,
    ErrorBody,
    ResourceView,
    SessionList,
    SessionView,
    ms_to_datetime,
    session_view,
)
from tapedeck.compiler.queue import request_compile, withdraw_compile
from tapedeck.guards import client_key, creation_limiter
from tapedeck.lifecycle import CompileVerdict
from tapedeck.sessions import OUTPUT, State, is_valid_session_id
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck.storage.records import PB_TO_STATE, STATE_TO_PB

MAX_LIMIT = 1000


class CompileDispatcher(Protocol):
    """Starts compiles: the local worker in embedded mode, the operator in a cluster."""

    async def submit(self, session_id: str) -> None: ...


class SessionDirectory(Protocol):
    """Where sessions are registered besides storage: RecordingSession resources in a cluster.

    Embedded mode has none. Storage stays the source of truth for state and progress.
    """

    async def created(self, session_id: str) -> None: ...

    async def deleted(self, session_id: str) -> None: ...

    async def describe(self, session_ids: Sequence[str]) -> Mapping[str, ResourceView]: ...


def checked_id(session_id: str) -> str:
    if not is_valid_session_id(session_id):
        raise ApiError(
            400, "invalid-session-id", "session ids are 8-63 characters of a-z, 0-9 and '-'"
        )
    return session_id


ERRORS: dict[int | str, dict[str, object]] = {
    s: {"model": ErrorBody} for s in (400, 401, 404, 409, 416, 422, 503)
}


def build_router(
    storage: StorageClient,
    settings: Settings,
    secret: str,
    dispatcher: CompileDispatcher,
    directory: SessionDirectory | None = None,
) -> APIRouter:
    auth = Auth(settings, secret)
    router = APIRouter(prefix="/api", responses=ERRORS)
    guarded = [Depends(auth.require)]

    async def get_session(session_id: str) -> pb.Session:
        try:
            return await storage.get_session(checked_id(session_id))
        except StorageError as err:
            if err.code.name == "NOT_FOUND":
                raise ApiError(404, "not-found", f"session {session_id} not found") from None
            raise

    async def views(sessions: Sequence[pb.Session]) -> list[SessionView]:
        resources = await directory.describe([s.id for s in sessions]) if directory else {}
        return [session_view(s, auth.download_url(s.id), resources.get(s.id)) for s in sessions]

    creation = creation_limiter(settings.sessions_per_minute)

    def limit_creation(request: Request) -> None:
        client = client_key(request.client.host if request.client else "unknown")
        if not creation.allow(client):
            wait = creation.retry_after(client)
            raise ApiError(
                429,
                "rate-limited",
                f"too many new sessions from {client}; retry in {wait} s",
                {"Retry-After": str(wait)},
            )

    @router.post("/sessions", status_code=201, dependencies=[*guarded, Depends(limit_creation)])
    async def create_session() -> CreatedSession:
        session = await storage.create_session()
        if directory:
            try:
                await directory.created(session.id)
            except Exception:
                await storage.delete_session(session.id)
                raise
        expires = int(time.time() + settings.upload_token_ttl.total_seconds())
        return CreatedSession(
            id=session.id,
            upload_token=tokens.sign(secret, tokens.UPLOAD, session.id, expires),
            created_at=ms_to_datetime(session.created_at_ms),
            expires_at=ms_to_datetime(session.expires_at_ms),
        )

    @router.get("/sessions", dependencies=guarded, response_model_by_alias=True)
    async def list_sessions(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        state: Annotated[State | None, Query()] = None,
    ) -> SessionList:
        states = [STATE_TO_PB[state]] if state else []
        page = await storage.list_sessions(limit, cursor or "", states)
        return SessionList(
            items=await views(page.sessions), next_cursor=page.next_page_token or None
        )

    @router.get("/sessions/{session_id}", dependencies=guarded)
    async def session_detail(session_id: str) -> SessionView:
        return (await views([await get_session(session_id)]))[0]

    @router.delete("/sessions/{session_id}", status_code=204, dependencies=guarded)
    async def delete_session(session_id: str) -> Response:
        await get_session(session_id)
        if directory:
            # The resource's finalizer deletes the data as well; doing it here too makes the
            # 204 true at once, and whichever comes second finds nothing left to delete.
            await directory.deleted(session_id)
            try:
                await storage.delete_session(session_id)
            except StorageError as err:
                if err.code.name != "NOT_FOUND":
                    raise
        else:
            await storage.delete_session(session_id)
        return Response(status_code=204)

    @router.post("/compile-video/{session_id}", status_code=202, dependencies=guarded)
    async def compile_video(session_id: str) -> CompileAccepted:
        session = await get_session(session_id)
        request = await request_compile(storage, session)
        if request.verdict == CompileVerdict.STILL_RECORDING:
            raise ApiError(
                409, "still-recording", "a track is still being written; stop the recording first"
            )
        if request.verdict == CompileVerdict.EMPTY:
            raise ApiError(409, "empty", "nothing was recorded in this session")
        if request.verdict == CompileVerdict.EXPIRED:
            raise ApiError(409, "expired", "this session has expired")
        if request.queued:
            try:
                await dispatcher.submit(session_id)
            except Exception:
                await withdraw_compile(storage, session)
                raise
        return CompileAccepted(state=request.state.value)

    @router.api_route(
        "/download/{session_id}",
        methods=["GET", "HEAD"],
        response_class=StreamingResponse,
        responses={200: {"content": {"video/mp4": {}}}, 206: {}},
    )
    async def download(session_id: str, request: Request) -> Response:
        checked_id(session_id)
        auth.require_download(request, session_id)
        session = await get_session(session_id)
        if PB_TO_STATE[session.state] != State.READY or not session.output.size:
            raise ApiError(
                409, "not-ready", f"session is {PB_TO_STATE[session.state].value}; compile it first"
            )
        size, etag = session.output.size, session.output.etag
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "Content-Disposition": f'attachment; filename="{session_id}.mp4"',
            "Cache-Control": "private, max-age=0, must-revalidate",
        }
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', "*"):
            return Response(status_code=304, headers=headers)
        try:
            part = ranges.select(
                request.headers.get("range"), request.headers.get("if-range"), size, etag
            )
        except ranges.Unsatisfiable:
            raise ApiError(
                416,
                "range-not-satisfiable",
                f"the file has {size} bytes",
                {"Content-Range": f"bytes */{size}"},
            ) from None
        headers["Content-Length"] = str(part.length)
        if part.partial:
            headers["Content-Range"] = f"bytes {part.start}-{part.stop - 1}/{size}"
        status = 206 if part.partial else 200
        if request.method == "HEAD" or part.length == 0:
            return Response(status_code=status, headers=headers, media_type="video/mp4")

        async def body() -> AsyncIterator[bytes]:
            async for chunk in storage.read(session_id, OUTPUT, part.start, part.length):
                yield chunk

        return StreamingResponse(body(), status, headers=headers, media_type="video/mp4")

    return router
