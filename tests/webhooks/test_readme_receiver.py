"""The README's ten-line receiver works as printed: it accepts what the deliverer signs and
refuses a wrong signature."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from tapedeck.webhooks.deliverer import signed_headers
from tapedeck.webhooks.events import Event
from tapedeck.webhooks.secret import new_webhook_secret

README = Path(__file__).resolve().parents[2] / "README.md"


def receiver_source() -> str:
    text = README.read_text()
    section = text[text.index("## Receiving webhooks") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def test_the_readme_receiver_verifies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = receiver_source()
    assert len(source.strip().splitlines()) <= 10
    secret = new_webhook_secret()
    monkeypatch.setenv("TAPEDECK_WEBHOOK_SECRET", secret)
    scope: dict[str, object] = {}
    exec(compile(source, "README receiver", "exec"), scope)
    client = TestClient(scope["app"])  # type: ignore[arg-type]
    event = Event(
        id="msg_1",
        type="compile.ready",
        session_id="abcdefgh-1",
        timestamp_ms=1,
        data={"sessionId": "abcdefgh-1"},
    )
    body = event.body({"downloadUrl": "http://x/api/download/abcdefgh-1?exp=1&sig=s"})
    headers = signed_headers(Webhook(secret), event.id, body, datetime.now(UTC))
    assert client.post("/hooks", content=body, headers=headers).status_code == 200
    assert "ready: http://x/api/download/abcdefgh-1" in capsys.readouterr().out
    forged = signed_headers(Webhook(new_webhook_secret()), event.id, body, datetime.now(UTC))
    assert client.post("/hooks", content=body, headers=forged).status_code == 401
