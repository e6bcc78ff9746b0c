"""List cursors: what `nextCursor` looks like, so the OpenAPI document can say exactly which
cursors the api accepts.

Storage's page token is urlsafe base64 of `created_ms:id`, and not every base64 string
decodes to one, so a pattern on base64 cannot tell a good cursor from a bad one. The api
hands out and takes the decoded form instead, `created_ms:id`, which a pattern describes
exactly: every cursor the pattern admits is one storage accepts.
"""

from __future__ import annotations

import base64

from tapedeck.sessions import SESSION_ID_PATTERN

CURSOR_PATTERN = r"^[0-9]{1,15}:" + SESSION_ID_PATTERN.removeprefix("^")
CURSOR_MAX_LENGTH = 15 + 1 + 63


def to_page_token(cursor: str) -> str:
    """A cursor (already matched against `CURSOR_PATTERN`) as storage's page token."""
    return base64.urlsafe_b64encode(cursor.encode()).decode()


def from_page_token(token: str) -> str | None:
    """Storage's next-page token as a cursor; None when there is no next page."""
    if not token:
        return None
    return base64.urlsafe_b64decode(token).decode()
