"""Bearer auth on `/api` when `TAPEDECK_API_TOKEN` is set; signed URLs for downloads."""

from __future__ import annotations

import hmac
import time

from fastapi import Request

from tapedeck import tokens
from tapedeck.api.errors import ApiError
from tapedeck.settings import Settings

DOWNLOAD_URL_TTL = 3600


class Auth:
    def __init__(self, settings: Settings, secret: str) -> None:
        self.api_token = settings.api_token
        self.secret = secret

    def require(self, request: Request) -> None:
        if not self.api_token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        # As bytes: compare_digest raises TypeError on a non-ASCII str (a 500, not a 401).
        # Starlette decodes headers as latin-1, so this gives back the bytes sent.
        given = value.strip().encode("latin-1")
        expected = self.api_token.encode("utf-8", "surrogateescape")  # the env's own bytes
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
            raise ApiError(
                401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    def require_download(self, request: Request, session_id: str) -> None:
        sig, exp = request.query_params.get("sig"), request.query_params.get("exp")
        if sig and exp and tokens.verify(self.secret, tokens.DOWNLOAD, session_id, f"{exp}.{sig}"):
            return
        self.require(request)

    def signed_query(self, session_id: str) -> dict[str, str]:
        """`exp` and `sig` of a signed URL of this session's media (none without a token):
        what an `<img>`, a `<video>` or hls.js fetches carries no bearer token."""
        if not self.api_token:
            return {}
        expires = int(time.time()) + DOWNLOAD_URL_TTL
        exp, _, sig = tokens.sign(self.secret, tokens.DOWNLOAD, session_id, expires).partition(".")
        return {"exp": exp, "sig": sig}

    def download_url(self, session_id: str) -> str:
        url = f"/api/download/{session_id}"
        query = self.signed_query(session_id)
        return f"{url}?exp={query['exp']}&sig={query['sig']}" if query else url
