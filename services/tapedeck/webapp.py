"""Builds the HTTP/WebSocket process: ingest, api, or both on one port (embedded mode)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import make_asgi_app
from starlette.routing import Match, Mount
from starlette.types import Receive, Scope, Send

from tapedeck.api import errors
from tapedeck.api.routes import build_router
from tapedeck.embedded.sweeper import run_sweeper
from tapedeck.embedded.worker import LocalCompileWorker
from tapedeck.ingest.app import Ingest
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck.tokens import new_secret

log = logging.getLogger(__name__)

SECRET_FILE = ".tapedeck-secret"


def resolve_secret(settings: Settings) -> str:
    """The HMAC key for upload and download tokens: configured, or kept beside the data.

    A generated key is durable (file and directory fsynced) before any token is signed with
    it: a key lost to a power cut would void every token issued, and a file left empty by one
    (the entry durable, its content not) is replaced, never taken for an empty key, with which
    anyone could sign tokens."""
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_FILE
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        _write_synced(fd, new_secret())
        _sync_dir(settings.data_dir)
    secret = path.read_text().strip()
    if not secret:  # a creator died (or the power went) before the key was synced
        tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.tmp")
        try:
            _write_synced(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), new_secret())
            os.replace(tmp, path)
            _sync_dir(settings.data_dir)
        finally:
            tmp.unlink(missing_ok=True)
        secret = path.read_text().strip()
    return secret


def _write_synced(fd: int, text: str) -> None:
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FrontendFiles(StaticFiles):
    """The UI's static export; unknown `/api` and `/ws` paths still get JSON errors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/api" or path.startswith(("/api/", "/ws/")):
            # This mount matches every method, so a known path with the wrong method lands
            # here too: tell the two apart as the router would have.
            routes = scope["app"].router.routes
            if any(
                r.matches(scope)[0] == Match.PARTIAL for r in routes if not isinstance(r, Mount)
            ):
                response = errors.error_response(
                    405, "method-not-allowed", f"{scope['method']} is not allowed on {path[:100]}"
                )
            else:
                response = errors.error_response(
                    404, "not-found", f"no such endpoint: {path[:100]}"
                )
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def default_frontend_dir() -> Path | None:
    candidate = Path(__file__).resolve().parents[2] / "frontend" / "out"
    return candidate if (candidate / "index.html").exists() else None


async def storage_serving(storage_addr: str) -> bool:
    async with grpc.aio.insecure_channel(storage_addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def create_app(settings: Settings, parts: Iterable[str] = ("api", "ingest")) -> FastAPI:
    parts = set(parts)
    storage = StorageClient(settings.storage_addr)
    secret = resolve_secret(settings)
    worker = LocalCompileWorker(storage, settings)
    background: list[asyncio.Task[None]] = []
    embedded = settings.mode == "embedded" and "api" in parts

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if embedded:
            await worker.start()
            background.append(asyncio.create_task(run_sweeper(storage, settings)))
        yield
        for task in background:
            task.cancel()
        await worker.stop()
        await storage.close()

    app = FastAPI(
        title="Tapedeck",
        version="0.1.0",
        lifespan=lifespan,
        description="Record from a browser, stream to a server, compile into an MP4.",
    )
    errors.install(app)
    if settings.cors_origins:  # off unless configured: the UI is same-origin
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Range"],
            expose_headers=["Content-Range", "ETag", "Content-Disposition"],
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    async def readyz() -> JSONResponse | dict[str, str]:
        if not await storage_serving(settings.storage_addr):
            return errors.error_response(503, "storage-unavailable", "storage is not serving")
        return {"status": "ready"}

    app.mount("/metrics", make_asgi_app())
    if "ingest" in parts:
        app.include_router(Ingest(storage, settings, secret).router())
    if "api" in parts:
        if settings.mode == "cluster":
            from tapedeck.cluster.api import ClusterSessions
            from tapedeck.cluster.kube import Kube

            cluster = ClusterSessions(Kube.from_settings(settings))
            app.include_router(build_router(storage, settings, secret, cluster, cluster))
        else:
            app.include_router(build_router(storage, settings, secret, worker))
        frontend = settings.frontend_dir or default_frontend_dir()
        if frontend is not None:
            app.mount("/", FrontendFiles(directory=frontend, html=True), name="frontend")
        else:
            log.info("no frontend build found; run `make frontend` to serve the UI at /")
    return app
