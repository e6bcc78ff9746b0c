"""Every error leaves as `{"error": {"code": ..., "message": ...}}` with the right status."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from tapedeck.storage.client import StorageError


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


_STORAGE_STATUS = {
    grpc.StatusCode.NOT_FOUND: (404, "not-found"),
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid-argument"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "conflict"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "exists"),
    grpc.StatusCode.OUT_OF_RANGE: (416, "out-of-range"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (507, "storage-full"),
}


def from_storage(err: StorageError) -> ApiError:
    if err.reason == "too-many-open-sessions":
        return ApiError(429, "too-many-sessions", err.message, {"Retry-After": "30"})
    status, code = _STORAGE_STATUS.get(err.code, (503, "storage-unavailable"))
    message = err.message if status != 503 else "storage is unavailable; try again shortly"
    return ApiError(status, code, message)


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(scope: Scope) -> str:
    """`Allow` for a 405 (RFC 9110): every method some route answers on this path. Starlette
    names only the first route's, and FastAPI has one route per method (behind included
    routers), so ask every route, through its public `matches`, about every method."""
    routes = [r for r in scope["app"].router.routes if not isinstance(r, Mount)]
    return ", ".join(
        method
        for method in _METHODS
        if any(r.matches({**scope, "method": method})[0] == Match.FULL for r in routes)
    )


# Parameters whose violations are 400 with their own code (docs/api.md), not 422.
_BAD_PARAMETER = {
    ("path", "session_id"): (
        "invalid-session-id",
        "session ids are 8-63 characters of a-z, 0-9 and '-'",
    ),
    ("query", "cursor"): ("invalid-cursor", "cursor: not a cursor this api returned"),
}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(StorageError)
    async def storage_error(_: Request, exc: StorageError) -> JSONResponse:
        err = from_storage(exc)
        return error_response(err.status, err.code, err.message, err.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        for error in exc.errors():
            known = _BAD_PARAMETER.get(tuple(error["loc"][:2]))
            if known is not None:
                return error_response(400, *known)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(422, "invalid-request", message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        headers = dict(exc.headers or {})
        allow = allowed_methods(request.scope) if exc.status_code == 405 else ""
        if allow:
            headers["Allow"] = allow
        return error_response(exc.status_code, code, str(exc.detail), headers)
