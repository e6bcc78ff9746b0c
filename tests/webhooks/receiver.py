"""A real webhook receiver for tests: an HTTP server on loopback that verifies each request
with the standardwebhooks library and records what it got."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


@dataclass
class Received:
    id: str
    type: str
    data: dict[str, Any]
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """`answer`: the status to reply with; while `hold` is clear, requests wait for it."""

    port: int
    secret: str
    answer: int = 200
    hold: threading.Event = field(default_factory=threading.Event)
    got: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    entered: int = 0
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self.hold.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver.entered += 1
                receiver.hold.wait()
                try:
                    payload = Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                status = receiver.answer
                receiver.got.append(
                    Received(
                        headers["webhook-id"],
                        payload["type"],
                        payload["data"],
                        status,
                        headers,
                        body,
                    )
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.hold.set()
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def delivered(self) -> list[Received]:
        """What the receiver accepted (answered 2xx), in arrival order."""
        return [r for r in self.got if 200 <= r.status < 300]

    def types(self, session_id: str) -> list[str]:
        return [r.type for r in self.delivered() if r.data.get("sessionId") == session_id]


def dumps(value: object) -> str:
    return json.dumps(value, indent=1)
