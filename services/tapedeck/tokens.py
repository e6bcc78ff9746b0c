"""Signed, expiring tokens: per-session upload tokens and download signatures.

HMAC-SHA256 over a purpose, the session id and the expiry, so a token for one session (or one
purpose) is worthless for another, and nothing needs to be stored to check one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def _mac(secret: str, purpose: str, session_id: str, expires: int) -> str:
    message = f"{purpose}\n{session_id}\n{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def sign(secret: str, purpose: str, session_id: str, expires: int) -> str:
    """A token `EXPIRES.MAC`, EXPIRES in epoch seconds."""
    return f"{expires}.{_mac(secret, purpose, session_id, expires)}"


def verify(
    secret: str, purpose: str, session_id: str, token: str, now: float | None = None
) -> bool:
    expires_text, _, mac = token.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or not mac:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(mac, _mac(secret, purpose, session_id, expires))


UPLOAD = "upload"
DOWNLOAD = "download"
