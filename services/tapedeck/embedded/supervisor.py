"""`tapedeck up`: runs storage and the web process (api + ingest + worker + sweeper) as
children on loopback, restarts one that dies (with backoff), and stops both on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from tapedeck.processes import child_command
from tapedeck.settings import Settings

log = logging.getLogger("tapedeck.up")

MAX_BACKOFF = 10.0
STABLE_AFTER = 30.0  # a child that ran this long gets its backoff reset


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0


async def _run_child(child: Child, stopping: asyncio.Event) -> None:
    backoff = 0.5
    while not stopping.is_set():
        started = time.monotonic()
        child.process = await asyncio.create_subprocess_exec(
            *child_command([sys.executable, "-m", "tapedeck", *child.args]), env=child.env
        )
        code = await child.process.wait()
        if stopping.is_set():
            return
        if time.monotonic() - started > STABLE_AFTER:
            backoff = 0.5
        child.restarts += 1
        log.warning(
            "%s exited with %s; restart #%d in %.1f s", child.name, code, child.restarts, backoff
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), backoff)
        backoff = min(MAX_BACKOFF, backoff * 2)


async def supervise(settings: Settings) -> None:
    storage_addr = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TAPEDECK_MODE": "embedded",
        "TAPEDECK_DATA_DIR": str(settings.data_dir.resolve()),
        "TAPEDECK_STORAGE_ADDR": storage_addr,
        "TAPEDECK_HOST": settings.host,
        "TAPEDECK_PORT": str(settings.port),
    }
    children = [
        Child("storage", ["serve", "storage"], env),
        Child("web", ["serve", "web"], env),
    ]
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    auth = "bearer token required on /api" if settings.api_token else "no API token: loopback only"
    log.info(
        "Tapedeck on http://%s:%d (data in %s; %s)",
        settings.host,
        settings.port,
        settings.data_dir.resolve(),
        auth,
    )
    runners = [asyncio.create_task(_run_child(c, stopping)) for c in children]
    await stopping.wait()
    log.info("stopping")
    for child in reversed(children):  # web first, so nothing writes while storage goes
        if child.process and child.process.returncode is None:
            child.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.process.wait(), 10)
            except TimeoutError:
                child.process.kill()
    for runner in runners:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
