"""The Standard Webhooks signing secret: `TAPEDECK_WEBHOOK_SECRET`, else one kept beside the
data like the HMAC key (created whole, replaced when empty or torn: webapp.stored_secret)."""

from __future__ import annotations

import base64
import binascii
import secrets

from tapedeck.settings import Settings

PREFIX = "whsec_"
SECRET_FILE = ".tapedeck-webhook-secret"
MIN_KEY_BYTES = 24  # the specification's lower bound


def new_webhook_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def valid_webhook_secret(text: str) -> bool:
    """`whsec_` and base64 of at least 24 bytes: what a torn or hand-edited file is not."""
    if not text.startswith(PREFIX) or not text.isprintable():
        return False
    try:
        key = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(key) >= MIN_KEY_BYTES


def resolve_webhook_secret(settings: Settings) -> str:
    if settings.webhook_secret:
        if not valid_webhook_secret(settings.webhook_secret):
            raise SystemExit(
                "TAPEDECK_WEBHOOK_SECRET is not a Standard Webhooks secret: expected whsec_ "
                "followed by base64 of at least 24 bytes (unset it to have one generated)"
            )
        return settings.webhook_secret
    if settings.mode == "cluster":
        # The operator has no volume to keep one on, and receivers need it stable.
        raise SystemExit(
            "TAPEDECK_WEBHOOK_SECRET is required in cluster mode (the chart keeps one in its "
            "Secret, key webhook-secret)"
        )
    from tapedeck.webapp import stored_secret

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return stored_secret(settings.data_dir / SECRET_FILE, new_webhook_secret, valid_webhook_secret)
