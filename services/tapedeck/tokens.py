"""Signed, expiring tokens: per-session upload tokens and download signatures.

HMAC-SHA256 over a purpose, the session id and the expiry, so a token for one session (or one
purpose) is worthless for another, and nothing needs to be stored to check one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time

_EXPIRES = re.compile(r"[0-9]{1,12}", re.ASCII)
_MAC = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


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
    """False for anything that is not a valid, unexpired token, however malformed: ASCII
    digits only (`str.isdigit` and `int` accept other scripts' digits), an ASCII MAC, and
    the MACs compared as bytes (`compare_digest` raises on non-ASCII str)."""
    expires_text, _, mac = token.partition(".")
    if not _EXPIRES.fullmatch(expires_text) or not _MAC.fullmatch(mac):
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    expected = _mac(secret, purpose, session_id, expires)
    return hmac.compare_digest(mac.encode("ascii"), expected.encode("ascii"))


UPLOAD = "upload"
DOWNLOAD = "download"


_REPLICA = re.compile(r"[1-9][0-9]{0,3}", re.ASCII)


def _upload_purpose(replica: int) -> str:
    """Replica 0's tokens are the ones from before replicas (`EXPIRES.MAC`); each other
    replica signs a purpose of its own, so a token cannot be steered to another replica."""
    return UPLOAD if replica == 0 else f"{UPLOAD}@{replica}"


def upload_token(secret: str, session_id: str, ttl_seconds: float, replica: int = 0) -> str:
    """The token a client appends to a session's tracks with, valid for `ttl_seconds`; it
    names the storage replica the session is placed on (`R~EXPIRES.MAC`, R > 0), so ingest
    finds the owner without a lookup (docs/decisions.md)."""
    if replica < 0:
        raise ValueError("replica must be >= 0")
    token = sign(secret, _upload_purpose(replica), session_id, int(time.time() + ttl_seconds))
    return f"{replica}~{token}" if replica else token


def upload_replica(
    secret: str, session_id: str, token: str, now: float | None = None
) -> int | None:
    """The replica a valid upload token for `session_id` names; None for anything else."""
    replica_text, sep, rest = token.partition("~")
    if not sep:
        return 0 if verify(secret, UPLOAD, session_id, token, now) else None
    if not _REPLICA.fullmatch(replica_text):
        return None
    replica = int(replica_text)
    return replica if verify(secret, _upload_purpose(replica), session_id, rest, now) else None
