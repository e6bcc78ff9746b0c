"""Every error leaves as `{"error": {"code": ..., "message": ...}}` with the right status."""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

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
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response(422, "invalid-request", message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return error_response(exc.status_code, code, str(exc.detail), exc.headers)
