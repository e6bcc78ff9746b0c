"""Cursors as the api shows them, and storage's page tokens, without servers."""

from __future__ import annotations

import base64
from typing import Annotated

import pytest
from pydantic import StringConstraints, TypeAdapter, ValidationError

from tapedeck.api.cursors import CURSOR_MAX_LENGTH, CURSOR_PATTERN, from_page_token, to_page_token

# What FastAPI enforces for `Query(pattern=CURSOR_PATTERN)` (pydantic-core's regex).
cursors = TypeAdapter(
    Annotated[str, StringConstraints(pattern=CURSOR_PATTERN, max_length=CURSOR_MAX_LENGTH)]
)


def test_round_trip_with_storage_tokens() -> None:
    token = base64.urlsafe_b64encode(b"1764300000000:0c136489-c0ad-4ddb-856c-adf166df948c")
    cursor = from_page_token(token.decode())
    assert cursor == "1764300000000:0c136489-c0ad-4ddb-856c-adf166df948c"
    assert cursors.validate_python(cursor) == cursor
    assert to_page_token(cursor) == token.decode()
    assert from_page_token("") is None


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "%%%",
        "MTc2NDMwMDAwMDAwMDowYzEzNjQ4OQ==",  # the old base64 form
        "1:short",
        "x:abcdefgh",
        "1:abcdefgh\n",
        "1234567890123456:abcdefgh",
        "1:" + "a" * 64,
        "1:-abcdefgh",
        "²:abcdefgh",
    ],
)
def test_pattern_refuses(cursor: str) -> None:
    with pytest.raises(ValidationError):
        cursors.validate_python(cursor)
