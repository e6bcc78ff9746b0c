"""The webhook signing secret: configured, else generated and kept like the HMAC key, with
the same care for an empty or torn file, and printed by `tapedeck webhook-secret`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from tapedeck.settings import Settings
from tapedeck.webhooks.secret import (
    SECRET_FILE,
    new_webhook_secret,
    resolve_webhook_secret,
    valid_webhook_secret,
)


def test_generated_secrets_are_standard_webhooks_secrets() -> None:
    secret = new_webhook_secret()
    assert valid_webhook_secret(secret)
    Webhook(secret)  # the library takes it
    for bad in ("", "whsec_", "whsec_" + "A" * 8, "whsec_!!!notbase64!!!", secret + "\0"):
        assert not valid_webhook_secret(bad), bad


def test_kept_beside_the_data_and_replaced_when_empty_or_torn(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = resolve_webhook_secret(settings)
    assert resolve_webhook_secret(settings) == first
    assert (tmp_path / SECRET_FILE).read_text() == first
    for damaged in ("", first[:12], first[:-10] + "\0" * 10):
        (tmp_path / SECRET_FILE).write_text(damaged)
        replaced = resolve_webhook_secret(settings)
        assert valid_webhook_secret(replaced) and replaced != damaged


def test_a_configured_secret_wins_and_a_malformed_one_is_refused(tmp_path: Path) -> None:
    mine = new_webhook_secret()
    assert resolve_webhook_secret(Settings(data_dir=tmp_path, webhook_secret=mine)) == mine
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(SystemExit, match="whsec_"):
        resolve_webhook_secret(Settings(data_dir=tmp_path, webhook_secret="hunter2"))


def test_the_command_prints_the_kept_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEDECK_")}
    printed = subprocess.run(
        [sys.executable, "-m", "tapedeck", "webhook-secret", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert printed == (tmp_path / SECRET_FILE).read_text()
    assert valid_webhook_secret(printed)


def test_webhook_urls_are_http_and_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("TAPEDECK_WEBHOOK_URL", "https://a.example/h, http://127.0.0.1:9/x")
    assert Settings().webhook_url == ["https://a.example/h", "http://127.0.0.1:9/x"]
    assert Settings().webhook_delivered_by() == "web"
    assert Settings(mode="cluster").webhook_delivered_by() == "operator"
    assert Settings(webhook_deliverer="off").webhook_delivered_by() == "off"
    for bad in ("ftp://a.example/", "a.example/hooks", "https:// spaced"):
        monkeypatch.setenv("TAPEDECK_WEBHOOK_URL", bad)
        with pytest.raises(ValidationError, match="http"):
            Settings()
    monkeypatch.delenv("TAPEDECK_WEBHOOK_URL")
    assert Settings().webhook_delivered_by() == "off"
