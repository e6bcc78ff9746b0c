from __future__ import annotations

import pytest

from tapedeck.api.ranges import Slice, Unsatisfiable, select


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, Slice(0, 1000, False)),
        ("bytes=0-99", Slice(0, 100, True)),
        ("bytes=500-", Slice(500, 1000, True)),
        ("bytes=-100", Slice(900, 1000, True)),
        ("bytes=900-5000", Slice(900, 1000, True)),
        ("bytes=-5000", Slice(0, 1000, True)),
        ("bytes=abc", Slice(0, 1000, False)),
        ("pages=0-1", Slice(0, 1000, False)),
        ("bytes=0-1,4-5", Slice(0, 1000, False)),
    ],
)
def test_select(header: str | None, expected: Slice) -> None:
    assert select(header, None, 1000, "e") == expected


def test_unsatisfiable_and_if_range() -> None:
    with pytest.raises(Unsatisfiable):
        select("bytes=1000-1001", None, 1000, "e")
    assert select("bytes=0-9", '"e"', 1000, "e").partial
    assert not select("bytes=0-9", '"stale"', 1000, "e").partial
