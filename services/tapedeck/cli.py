"""The `tapedeck` command: one entry point per role a process (or container) can play."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
from pathlib import Path

from tapedeck.settings import get_settings

ROLES = ("storage", "ingest", "api", "web")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
    compile_.add_argument("session_id")
    args = parser.parse_args(argv)

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

    if args.command == "up":
        from tapedeck.embedded.supervisor import supervise

        asyncio.run(supervise(settings))
    elif args.command == "serve" and args.role == "storage":
        from tapedeck.storage.server import serve as serve_storage

        asyncio.run(serve_storage(settings))
    elif args.command == "serve":
        import uvicorn

        from tapedeck.webapp import create_app

        parts = ("api", "ingest") if args.role == "web" else (args.role,)
        uvicorn.run(
            create_app(settings, parts),
            host=settings.host,
            port=settings.port,
            ws_per_message_deflate=False,  # media is already compressed (SPEC §6)
            ws_max_size=2 * settings.max_frame_bytes + 1024 * 1024,
            log_level="info",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    elif args.command == "compile":
        from tapedeck.compiler.job import main as compile_main

        sys.exit(asyncio.run(compile_main(args.session_id, settings)))
