"""Which bytes a download request wants, decided with werkzeug's Range parser (RFC 9110)."""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.http import parse_range_header


@dataclass(frozen=True)
class Slice:
    start: int
    stop: int  # exclusive
    partial: bool  # answer 206 with Content-Range

    @property
    def length(self) -> int:
        return self.stop - self.start


class Unsatisfiable(Exception):
    pass


def select(range_header: str | None, if_range: str | None, size: int, etag: str) -> Slice:
    """The slice to send. Malformed or multi-range requests get the whole file (RFC 9110 allows
    ignoring Range); a syntactically valid range beyond the end raises `Unsatisfiable` (416).
    """
    whole = Slice(0, size, partial=False)
    if not range_header or (if_range is not None and if_range.strip() != f'"{etag}"'):
        return whole
    parsed = parse_range_header(range_header)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return whole
    start, stop = parsed.ranges[0]
    if start < 0 and stop is None and size > 0:
        # A suffix longer than the file means the whole file (RFC 9110 §14.1.2); werkzeug
        # calls that unsatisfiable.
        return Slice(max(0, size + start), size, partial=True)
    bounds = parsed.range_for_length(size)
    if bounds is None:
        raise Unsatisfiable
    return Slice(bounds[0], bounds[1], partial=True)
