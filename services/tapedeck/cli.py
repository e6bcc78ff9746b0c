"""The `tapedeck` command: one entry point per role a process (or container) can play."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tapedeck.settings import Settings, get_settings

if TYPE_CHECKING:
    from tapedeck.compiler.plan import OutputOptions

ROLES = ("storage", "ingest", "api", "web")
T = TypeVar("T")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def until_signalled(work: Coroutine[Any, Any, T]) -> T | None:
    """Run `work` until SIGTERM or SIGINT cancels it (its own cleanup then runs: storage lets
    in-flight commits finish, a compile kills FFmpeg); None when cancelled. As a container's
    PID 1 a process without a handler never sees SIGTERM at all: the kernel drops it, and a
    pod's deletion waits out its grace period."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tapedeck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="embedded mode: every service on one machine")
    up.add_argument("--port", type=int)
    up.add_argument("--host")
    up.add_argument("--data-dir", type=Path)
    serve = sub.add_parser("serve", help="run one service (what a container runs)")
    serve.add_argument(
        "role", choices=ROLES, help="web = api and ingest on one port, as `up` runs them"
    )
    serve.add_argument("--port", type=int)
    serve.add_argument("--host")
    compile_ = sub.add_parser("compile", help="compile one session (what a compile Job runs)")
    follow = sub.add_parser(
        "follow", help="compile a session while it records, then as `compile` once asked"
    )
    for command in (compile_, follow):
        command.add_argument("session_id")
        command.add_argument(
            "--video-codec", choices=("auto", "h264"), help="h264: always re-encode"
        )
        command.add_argument("--crf", type=int, help="libx264 quality, 0-51 (default 23)")
        command.add_argument("--preset", help="libx264 preset (default veryfast)")
        command.add_argument("--max-height", type=int, help="scale taller video down to this")
        command.add_argument(
            "--hls",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="also write HLS (default: for recordings of TAPEDECK_HLS_MIN_DURATION or more)",
        )
    operator = sub.add_parser("operator", help="the Kubernetes operator (RecordingSession → Jobs)")
    scope = operator.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", help="namespace to serve (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true")
    operator.add_argument("--liveness", help="liveness endpoint URL (default: settings)")
    webhook = sub.add_parser(
        "webhook-secret", help="print the webhooks' signing secret (whsec_...) for receivers"
    )
    webhook.add_argument("--data-dir", type=Path)
    args = parser.parse_args(argv)
    options = _output_options(parser, args) if args.command in ("compile", "follow") else None

    for name in ("port", "host", "data_dir"):
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"TAPEDECK_{name.upper()}"] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if args.command == "up" or (args.command == "serve" and args.role != "storage"):
        if (
            settings.mode == "embedded"
            and not settings.api_token
            and not _is_loopback(settings.host)
        ):
            sys.exit(
                f"refusing to listen on {settings.host} without TAPEDECK_API_TOKEN: "
                "set a token, or bind to 127.0.0.1"
            )
    serves_api = args.command == "up" or (args.command == "serve" and args.role in ("api", "web"))
    if serves_api and settings.mode == "cluster" and not settings.api_token:
        if not settings.allow_anonymous:
            sys.exit(
                "refusing to serve /api without TAPEDECK_API_TOKEN in cluster mode: anyone who "
                "reaches the Service could list, download and delete recordings. Set a token "
                "(the chart generates one), or TAPEDECK_ALLOW_ANONYMOUS=true "
                "(auth.allowAnonymous) on a trusted network"
            )
        logging.getLogger("tapedeck").warning(
            "TAPEDECK_ALLOW_ANONYMOUS: /api answers without a token"
        )

    if args.command == "webhook-secret":
        from tapedeck.webhooks.secret import resolve_webhook_secret

        print(resolve_webhook_secret(settings))
    elif args.command == "up":
        from tapedeck.embedded.supervisor import supervise

        asyncio.run(supervise(settings))
    elif args.command == "serve" and args.role == "storage":
        from tapedeck.storage.server import serve as serve_storage

        asyncio.run(until_signalled(serve_storage(settings)))
    elif args.command == "serve":
        import uvicorn

        from tapedeck.drain import Drain, DrainingServer
        from tapedeck.webapp import create_app

        parts = ("api", "ingest") if args.role == "web" else (args.role,)
        drain = Drain(settings.drain_timeout.total_seconds())
        config = uvicorn.Config(create_app(settings, parts, drain), **web_server_options(settings))
        DrainingServer(config, drain).run()
    elif args.command == "compile":
        from tapedeck.compiler.exits import EXIT_RETRY
        from tapedeck.compiler.job import main as compile_main

        code = asyncio.run(until_signalled(compile_main(args.session_id, settings, options)))
        if code is None:  # stopped mid-compile: the session stays `compiling` for a retry
            logging.getLogger("tapedeck").warning("compile of %s stopped", args.session_id)
        sys.exit(EXIT_RETRY if code is None else code)
    elif args.command == "follow":
        from tapedeck.compiler.exits import EXIT_RETRY
        from tapedeck.compiler.follow import follow as follow_session
        from tapedeck.sessions import is_valid_session_id

        if not is_valid_session_id(args.session_id):  # it becomes a scratch path
            parser.error(f"invalid session id {args.session_id[:80]!r}")
        code = asyncio.run(until_signalled(follow_session(args.session_id, settings, options)))
        if code is None:  # stopped: a one-shot compile takes over (the session's state says)
            logging.getLogger("tapedeck").warning("follower of %s stopped", args.session_id)
        sys.exit(EXIT_RETRY if code is None else code)
    elif args.command == "operator":
        from tapedeck_operator.run import run_operator

        run_operator(
            settings,
            namespaces=args.namespace or [],
            clusterwide=args.all_namespaces,
            liveness=args.liveness,
        )


def web_server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the web process (tests/ingest/test_memory.py runs the same)."""
    return {
        "host": settings.host,
        "port": settings.port,
        # wsproto, not uvicorn's default (websockets' parser): that parser keeps each
        # connection's last frame until the next arrives, a frame per stream (314 KiB at
        # 2.5 Mbit/s; docs/performance.md measures both).
        "ws": settings.ws_implementation,
        "ws_per_message_deflate": False,  # media is already compressed (SPEC §6)
        "ws_max_size": 2 * settings.max_frame_bytes + 1024 * 1024,
        "log_level": "info",
        "access_log": False,
        "timeout_graceful_shutdown": 5,
        # Who the client is (rate limits): the peer, unless it is a trusted proxy.
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": settings.trusted_proxies or None,
    }


def _output_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> OutputOptions:
    """`--crf/--preset/--max-height/--video-codec` → the compiler's (and the CRD's) options."""
    from pydantic import ValidationError

    from tapedeck.compiler.plan import OutputOptions

    given = {
        name: getattr(args, name)
        for name in ("video_codec", "crf", "preset", "max_height", "hls")
        if getattr(args, name) is not None
    }
    try:
        return OutputOptions(**given)
    except ValidationError as err:
        first = err.errors()[0]
        parser.error(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}")
