"""HTTP routes of the api service (SPEC §5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security
from fastapi.params import Depends as Dependency
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.security import HTTPBearer

from tapedeck import tokens
from tapedeck._proto import storage_pb2 as pb
from tapedeck.api import cursors, outputs, ranges
from tapedeck.api.auth import Auth
from tapedeck.api.errors import ApiError
from tapedeck.api.models import (
    CompileAccepted,
    CreatedSession,
    ErrorBody,
    MediaView,
    NewSessionBody,
    ResourceView,
    SessionList,
    SessionPatch,
    SessionView,
    ms_to_datetime,
    session_view,
)
from tapedeck.compiler.queue import request_compile, withdraw_compile
from tapedeck.guards import client_key, creation_limiter
from tapedeck.lifecycle import CompileVerdict
from tapedeck.sessions import (
    HLS_PLAYLIST,
    OUTPUT,
    OUTPUT_NAME_PATTERN,
    POSTER,
    SESSION_ID_PATTERN,
    STORYBOARD_VTT,
    TITLE_MAX,
    InvalidTitle,
    State,
    default_title,
    is_valid_session_id,
    validate_title,
)
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck.storage.errors import NotFound, StorageFull
from tapedeck.storage.records import PB_TO_STATE, STATE_TO_PB
from tapedeck.storage.session_client import SessionClient

if TYPE_CHECKING:
    from tapedeck.storage.objectstore import Presigner

MAX_LIMIT = 1000
FULL_RETRY_AFTER = 60
"""Seconds a client waits before asking again for a session when every replica is full."""


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


def checked_title(title: str) -> str:
    try:
        return validate_title(title)
    except InvalidTitle as err:
        raise ApiError(400, "invalid-title", str(err)) from None


def checked_id(session_id: str) -> str:
    if not is_valid_session_id(session_id):
        raise ApiError(
            400, "invalid-session-id", "session ids are 8-63 characters of a-z, 0-9 and '-'"
        )
    return session_id


# The OpenAPI document declares what is enforced (tests/fuzz/test_api_fuzz.py runs
# schemathesis against it): the id pattern, whose violations are 400 `invalid-session-id`
# (errors.install maps FastAPI's 422), and every status a route can answer.
SessionId = Annotated[
    str,
    Path(
        pattern=SESSION_ID_PATTERN,
        description="8-63 characters of a-z, 0-9 and '-' (400 `invalid-session-id` otherwise)",
        examples=["0c136489-c0ad-4ddb-856c-adf166df948c"],
    ),
]

OutputName = Annotated[
    str,
    Path(pattern=OUTPUT_NAME_PATTERN, description="a named output of the last compile"),
]

_ERROR_DESCRIPTIONS = {
    400: "invalid session id, cursor or title",
    401: "missing or wrong bearer token",
    404: "no such session",
    409: "the session's state does not allow this",
    416: "the range is outside the file",
    422: "a query parameter of the wrong type or range",
    429: "too many new sessions (rate limit or open-sessions limit)",
    503: "storage (or, in a cluster, the Kubernetes API) is unavailable",
    507: "storage is full",
}
_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}},
    416: {"Content-Range": {"schema": {"type": "string"}, "description": "`bytes */size`"}},
    429: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
}


def answers(*statuses: int, auth: bool) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses (401 too when a token is required)."""
    return {
        status: {
            "model": ErrorBody,
            "description": _ERROR_DESCRIPTIONS[status],
            **({"headers": _ERROR_HEADERS[status]} if status in _ERROR_HEADERS else {}),
        }
        for status in sorted({*statuses, *([401] if auth else [])})
    }


# What a client does with a new session (and what schemathesis' stateful phase follows).
CREATED_LINKS = {
    name: {
        "operationRef": f"#/paths/~1api~1{path}~1{{session_id}}/{method}",
        "parameters": {"session_id": "$response.body#/id"},
    }
    for name, path, method in (
        ("GetSession", "sessions", "get"),
        ("DeleteSession", "sessions", "delete"),
        ("CompileSession", "compile-video", "post"),
        ("DownloadSession", "download", "get"),
        ("DownloadSessionHead", "download", "head"),
    )
}

SIGNED_URL_PARAMETERS = [
    {
        "name": name,
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": f"{description}: a `downloadUrl` works without the bearer token",
    }
    for name, description in (("exp", "signed URL expiry"), ("sig", "signed URL signature"))
]


def build_router(
    storage: StorageClient,
    settings: Settings,
    secret: str,
    dispatcher: CompileDispatcher,
    directory: SessionDirectory | None = None,
    *,
    presigner: Presigner | None = None,
) -> APIRouter:
    auth = Auth(settings, secret)
    router = APIRouter(prefix="/api")
    needs_token = bool(settings.api_token)
    guarded: list[Dependency] = [Depends(auth.require)]
    if needs_token:  # declares the scheme in the document; `auth.require` does the checking
        guarded.append(Security(HTTPBearer(auto_error=False, scheme_name="bearer")))

    session_client = SessionClient(storage)

    async def get_session(session_id: str) -> pb.Session:
        session = await session_client.get_or_none(checked_id(session_id))
        if session is None:
            raise ApiError(404, "not-found", f"session {session_id} not found")
        return session

    def media(session: pb.Session) -> MediaView:
        etags = {o.name: o.etag for o in session.named_outputs}
        query = auth.signed_query(session.id) if etags else {}

        def url(name: str) -> str | None:
            return (
                outputs.output_url(session.id, name, query, etags[name]) if name in etags else None
            )

        return MediaView(
            poster_url=url(POSTER), storyboard_url=url(STORYBOARD_VTT), hls_url=url(HLS_PLAYLIST)
        )

    async def views(sessions: Sequence[pb.Session]) -> list[SessionView]:
        resources = await directory.describe([s.id for s in sessions]) if directory else {}
        return [
            session_view(s, auth.download_url(s.id), resources.get(s.id), media(s))
            for s in sessions
        ]

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

    @router.post(
        "/sessions",
        status_code=201,
        dependencies=[*guarded, Depends(limit_creation)],
        responses={
            201: {"links": CREATED_LINKS},
            **answers(400, 422, 429, 503, 507, auth=needs_token),
        },
    )
    async def create_session(body: NewSessionBody | None = None) -> CreatedSession:
        title = checked_title(body.title) if body is not None and body.title is not None else ""
        try:
            session = await storage.create_session(title=title)
        except StorageFull:
            raise ApiError(
                503,
                "storage-full",
                "every storage replica is full; try again later",
                {"Retry-After": str(FULL_RETRY_AFTER)},
            ) from None
        if directory:
            try:
                await directory.created(session.id)
            except Exception:
                await storage.delete_session(session.id)
                raise
        ttl = settings.upload_token_ttl.total_seconds()
        return CreatedSession(
            id=session.id,
            title=session.title or default_title(session.created_at_ms),
            upload_token=tokens.upload_token(secret, session.id, ttl, session.replica),
            created_at=ms_to_datetime(session.created_at_ms),
            expires_at=ms_to_datetime(session.expires_at_ms),
        )

    @router.get(
        "/sessions",
        dependencies=guarded,
        response_model_by_alias=True,
        responses=answers(400, 422, 503, auth=needs_token),
    )
    async def list_sessions(
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        cursor: Annotated[
            str | None,
            Query(
                pattern=cursors.CURSOR_PATTERN,
                max_length=cursors.CURSOR_MAX_LENGTH,
                description="a `nextCursor` of an earlier page (400 `invalid-cursor` otherwise)",
            ),
        ] = None,
        state: Annotated[State | None, Query()] = None,
        q: Annotated[
            str | None,
            Query(
                max_length=TITLE_MAX,
                description="only sessions whose title or id contains this (any case)",
            ),
        ] = None,
    ) -> SessionList:
        states = [STATE_TO_PB[state]] if state else []
        page_token = cursors.to_page_token(cursor) if cursor else ""
        page = await storage.list_sessions(limit, page_token, states, (q or "").strip())
        return SessionList(
            items=await views(page.sessions),
            next_cursor=cursors.from_page_token(page.next_page_token),
        )

    @router.get(
        "/sessions/{session_id}",
        dependencies=guarded,
        responses=answers(400, 404, 503, auth=needs_token),
    )
    async def session_detail(session_id: SessionId) -> SessionView:
        return (await views([await get_session(session_id)]))[0]

    @router.patch(
        "/sessions/{session_id}",
        dependencies=guarded,
        responses=answers(400, 404, 422, 503, auth=needs_token),
    )
    async def patch_session(session_id: SessionId, body: SessionPatch) -> SessionView:
        title = checked_title(body.title)
        checked_id(session_id)
        try:
            session = await session_client.update(session_id, title=title)
        except NotFound:
            raise ApiError(404, "not-found", f"session {session_id} not found") from None
        return (await views([session]))[0]

    async def serve_output(
        session_id: str, name: str, request: Request, top_level: bool
    ) -> Response:
        checked_id(session_id)
        auth.require_download(request, session_id)
        if (name in outputs.TOP_LEVEL) != top_level:
            raise ApiError(404, "not-found", f"no {name} here")
        session = await get_session(session_id)
        found = {o.name: o for o in session.named_outputs}
        if PB_TO_STATE[session.state] != State.READY or name not in found:
            raise ApiError(404, "not-found", f"session {session_id} has no {name}")
        etag = found[name].etag
        fresh = request.query_params.get("v") == etag
        headers = {
            "ETag": f'"{etag}"',
            "Cache-Control": outputs.IMMUTABLE if fresh else outputs.REVALIDATE,
        }
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', "*"):
            return Response(status_code=304, headers=headers)
        data = bytearray()
        async for chunk in storage.read(session_id, name, 0, 0):
            data += chunk
        body = bytes(data)
        if name.endswith((".m3u8", ".vtt")):
            query = {k: v for k, v in request.query_params.items() if k in ("exp", "sig")}
            etags = {o.name: o.etag for o in session.named_outputs}
            body = outputs.rewrite_references(body.decode(), query, etags).encode()
        return Response(body, headers=headers, media_type=outputs.media_type(name))

    media_answers = {
        200: {"description": "the named output"},
        304: {"description": "not modified (`If-None-Match`)"},
        **answers(400, 404, 422, 503, auth=needs_token),
    }
    media_extra = {"parameters": SIGNED_URL_PARAMETERS} if needs_token else None

    @router.get(
        "/sessions/{session_id}/hls/{name}", responses=media_answers, openapi_extra=media_extra
    )
    async def hls_part(session_id: SessionId, name: OutputName, request: Request) -> Response:
        return await serve_output(session_id, name, request, top_level=False)

    @router.get("/sessions/{session_id}/{name}", responses=media_answers, openapi_extra=media_extra)
    async def named_output(session_id: SessionId, name: OutputName, request: Request) -> Response:
        """The poster (`poster.jpg`) and the storyboard (`storyboard.vtt`, `storyboard.jpg`)."""
        return await serve_output(session_id, name, request, top_level=True)

    @router.delete(
        "/sessions/{session_id}",
        status_code=204,
        dependencies=guarded,
        responses=answers(400, 404, 409, 503, 507, auth=needs_token),
    )
    async def delete_session(session_id: SessionId) -> Response:
        await get_session(session_id)
        if directory:
            # The resource's finalizer deletes the data as well; doing it here too makes the
            # 204 true at once, and whichever comes second finds nothing left to delete.
            await directory.deleted(session_id)
            await session_client.delete_if_exists(session_id)
        else:
            await storage.delete_session(session_id)
        return Response(status_code=204)

    @router.post(
        "/compile-video/{session_id}",
        status_code=202,
        dependencies=guarded,
        responses=answers(400, 404, 409, 503, 507, auth=needs_token),
    )
    async def compile_video(session_id: SessionId) -> CompileAccepted:
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
        responses={
            200: {"content": {"video/mp4": {}}, "description": "the MP4"},
            206: {"content": {"video/mp4": {}}, "description": "the requested range"},
            304: {"description": "not modified (`If-None-Match`)"},
            307: {"description": "a presigned GET of the store (`TAPEDECK_S3_DOWNLOADS=redirect`)"},
            **answers(400, 404, 409, 416, 503, auth=needs_token),
        },
        openapi_extra={"parameters": SIGNED_URL_PARAMETERS} if needs_token else None,
    )
    async def download(session_id: SessionId, request: Request) -> Response:
        checked_id(session_id)
        auth.require_download(request, session_id)
        session = await get_session(session_id)
        if PB_TO_STATE[session.state] != State.READY or not session.output.size:
            raise ApiError(
                409, "not-ready", f"session is {PB_TO_STATE[session.state].value}; compile it first"
            )
        if presigner is not None:
            from tapedeck.storage.objectstore import output_key

            # The store serves the bytes (Range, ETag): the api moves none (docs/storage.md).
            disposition = outputs.content_disposition(session.title, session_id)
            url = await presigner.url(output_key(session_id), disposition)
            return RedirectResponse(url, 307, headers={"Cache-Control": "no-store"})
        size, etag = session.output.size, session.output.etag
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "Content-Disposition": outputs.content_disposition(session.title, session_id),
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
