"""Builds the HTTP/WebSocket process: ingest, api, or both on one port (embedded mode)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import grpc
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, make_asgi_app
from starlette.types import ASGIApp, Receive, Scope, Send

from tapedeck import metrics
from tapedeck.api import errors
from tapedeck.api.models import ErrorBody
from tapedeck.api.routes import build_router
from tapedeck.drain import Drain
from tapedeck.durable import fsync_dir
from tapedeck.embedded.sweeper import run_sweeper
from tapedeck.embedded.worker import LocalCompileWorker
from tapedeck.guards import host_allowed
from tapedeck.ingest.app import Ingest
from tapedeck.readiness import storage_readiness
from tapedeck.settings import Settings
from tapedeck.storage import replicas
from tapedeck.tokens import new_secret

log = logging.getLogger(__name__)

SECRET_FILE = ".tapedeck-secret"
MIN_SECRET_CHARS = 32
"""A stored key shorter than this (an empty file left by a crash, a hand-edited one) is no key."""


def resolve_secret(settings: Settings) -> str:
    """The HMAC key for upload and download tokens: configured, or kept beside the data."""
    if settings.secret_key:
        return settings.secret_key
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return stored_secret(settings.data_dir / SECRET_FILE)


def _usable_key(found: str) -> bool:
    # (control characters: NULs a torn write left, not a key)
    return len(found) >= MIN_SECRET_CHARS and found.isprintable()


def stored_secret(
    path: Path, make: Callable[[], str] | None = None, usable: Callable[[str], bool] = _usable_key
) -> str:
    """The key in `path`, made (`make`, default `new_secret`) when missing and remade when not
    `usable` (the HMAC key here; webhooks/secret.py keeps the webhook secret the same way).

    The file is only ever installed whole (temporary file, fsync, link or rename, directory
    fsync), so a crash leaves it absent or complete. Processes starting at once (`up` starts
    several on one data dir) must agree: a lock on the directory serializes them, and a
    missing file is created with `os.link`, which fails if another process got there first.
    """
    with _dir_lock(path.parent):
        while True:
            try:
                found: str | None = path.read_text().strip()
            except FileNotFoundError:
                found = None
            if found is not None and usable(found):
                return found
            if found is not None:
                log.warning(
                    "%s holds no usable key (%d characters, or control characters); replacing "
                    "it with a new one "
                    "(upload tokens and download links signed with the old one stop working)",
                    path,
                    len(found),
                )
            key = (make or new_secret)()
            if _install(path, key, replace=found is not None):
                return key


def _install(path: Path, key: str, *, replace: bool) -> bool:
    """Puts `key` at `path` whole; False when `path` appeared meanwhile (not replacing)."""
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600
            f.write(key)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some FUSE and SMB mounts): the lock decides
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def _dir_lock(directory: Path) -> Iterator[None]:
    """An exclusive flock on the directory; best effort where the filesystem has none
    (then `os.link` still keeps concurrent creators to one key)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


OPEN_PATHS = ("/healthz", "/readyz", "/metrics")
"""Reachable with any Host: kubelet probes send the pod IP, scrapers a Service name, and
these reveal nothing about recordings."""


class HostGuard:
    """Refuses a `Host` that is not an allowed name on every route but the probes (DNS
    rebinding, docs/security.md): HTTP 403, or a refused WebSocket handshake."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._open(scope["path"]):
            await self.app(scope, receive, send)
            return
        hosts = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        host = hosts[0] if len(hosts) == 1 else None
        if host_allowed(host, self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            metrics.ingest_closes.labels("403").inc()
            if (await receive())["type"] == "websocket.connect":
                # Before accept: the server answers the handshake with HTTP 403.
                await send({"type": "websocket.close", "code": 4403, "reason": ""})
            return
        shown = (host or "")[:100]
        response = errors.error_response(
            403,
            "host-not-allowed",
            f"host {shown!r} is not allowed: open Tapedeck by a loopback name or address, "
            "or list the name in TAPEDECK_ALLOWED_HOSTS",
        )
        await response(scope, receive, send)

    @staticmethod
    def _open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith("/metrics/")


class FrontendFiles(StaticFiles):
    """The UI's static export; unknown `/api` and `/ws` paths still get JSON errors."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        api = path == "/api" or path.startswith(("/api/", "/ws/"))
        if scope["type"] == "http":
            # This mount matches every method, so a known path (`/api/...`, `/healthz`) with
            # another method lands here too: answer as the router would have, with `Allow`.
            allow = errors.allowed_methods(scope)
            if not allow and not api and scope["method"] not in ("GET", "HEAD"):
                allow = "GET, HEAD"  # the UI's own files
            if allow:
                response = errors.error_response(
                    405,
                    "method-not-allowed",
                    f"{scope['method']} is not allowed on {path[:100]}",
                    {"Allow": allow},
                )
                await response(scope, receive, send)
                return
        if api:
            response = errors.error_response(404, "not-found", f"no such endpoint: {path[:100]}")
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


def create_app(
    settings: Settings, parts: Iterable[str] = ("api", "ingest"), drain: Drain | None = None
) -> FastAPI:
    """`drain`: started by the server on SIGTERM (cli.DrainingServer); /readyz answers 503
    from then on and ingest hands its sockets over."""
    parts = set(parts)
    drain = drain or Drain(settings.drain_timeout.total_seconds())
    storage = replicas.connect(settings)
    secret = resolve_secret(settings)
    worker = LocalCompileWorker(storage, settings)
    background: list[asyncio.Task[None]] = []
    embedded = settings.mode == "embedded" and "api" in parts
    presigner = None
    if settings.s3_bucket and "api" in parts:
        from tapedeck.settings import S3Settings

        s3 = S3Settings()
        if s3.downloads == "redirect":
            from tapedeck.storage.objectstore import Presigner

            presigner = Presigner(s3)
    deliverer = None
    if "api" in parts and settings.webhook_delivered_by() == "web":
        from tapedeck.webhooks.deliverer import Deliverer
        from tapedeck.webhooks.secret import resolve_webhook_secret

        deliverer = Deliverer(
            settings, settings.webhook_url, resolve_webhook_secret(settings), secret
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if embedded:
            await worker.start()
            background.append(asyncio.create_task(run_sweeper(storage, settings)))
        if deliverer is not None:
            from tapedeck.webhooks.deliverer import run_deliverer

            # Its own task and HTTP client: a slow or failing receiver never touches ingest.
            background.append(asyncio.create_task(run_deliverer(deliverer)))
        yield
        for task in background:
            task.cancel()
        await worker.stop()
        await storage.close()
        if presigner is not None:
            await presigner.close()

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
    app.add_middleware(HostGuard, allowed=settings.allowed_hosts)  # outermost: before CORS

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=None,
        responses={
            503: {"model": ErrorBody, "description": "draining, or no storage replica serving"}
        },
    )
    async def readyz() -> JSONResponse | dict[str, object]:
        """Ready while at least one storage replica serves (every one is asked); those that do
        not answer are listed by index in `unavailableReplicas`."""
        if drain.draining:  # out of the Service's endpoints before the sockets close
            return errors.error_response(503, "draining", "shutting down (SIGTERM)")
        addrs = settings.replica_addrs()
        state = storage_readiness(await asyncio.gather(*map(storage_serving, addrs)))
        if not state.ready:
            message = "storage is not serving" if len(addrs) == 1 else "no storage replica serves"
            return errors.error_response(503, "storage-unavailable", message)
        body: dict[str, object] = {"status": "ready"}
        if state.unavailable:
            body["unavailableReplicas"] = list(state.unavailable)
        return body

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        """`/metrics` itself (what a ServiceMonitor scrapes), not only `/metrics/...`: the
        UI's mount at `/` would otherwise answer it with its 404 page."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.mount("/metrics", make_asgi_app())
    if "ingest" in parts:
        app.include_router(Ingest(storage, settings, secret, drain).router())
    if "api" in parts:
        if settings.mode == "cluster":
            from tapedeck.cluster.api import ClusterSessions
            from tapedeck.cluster.kube import Kube

            cluster = ClusterSessions(Kube.from_settings(settings))
            app.include_router(
                build_router(storage, settings, secret, cluster, cluster, presigner=presigner)
            )
        else:
            app.include_router(build_router(storage, settings, secret, worker, presigner=presigner))
        from tapedeck.api.auth import Auth
        from tapedeck.api.webhooks import webhook_router

        app.include_router(webhook_router(settings, Auth(settings, secret), deliverer))
        frontend = settings.frontend_dir or default_frontend_dir()
        if frontend is not None:
            app.mount("/", FrontendFiles(directory=frontend, html=True), name="frontend")
        else:
            log.info("no frontend build found; run `make frontend` to serve the UI at /")
    return app
