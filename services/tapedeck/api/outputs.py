"""Pure rules of what the api serves beside the MP4: download names, named outputs' headers,
and the playlist and index rewrite that carries a signed URL's query to the parts it names."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import quote, urlencode

from tapedeck.sessions import HLS_PLAYLIST, POSTER, STORYBOARD_SPRITE, STORYBOARD_VTT

MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "vtt": "text/vtt; charset=utf-8",
    "m3u8": "application/vnd.apple.mpegurl",
    "m4s": "video/iso.segment",
    "mp4": "video/mp4",
}
TOP_LEVEL = (POSTER, STORYBOARD_SPRITE, STORYBOARD_VTT)
"""Named outputs served at /api/sessions/{id}/{name}; HLS parts are under .../hls/{name}."""
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"

_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]+')
_FILENAME_MAX = 120


def media_type(name: str) -> str:
    return MEDIA_TYPES[name.rsplit(".", 1)[-1]]


def file_stem(title: str) -> str:
    """A title as a file name: no path separators, reserved or control characters, no
    leading dots, bounded; "" when nothing is left (the caller falls back to the id)."""
    stem = _UNSAFE.sub("_", unicodedata.normalize("NFC", title))
    stem = " ".join(stem.split()).strip(" ._")
    return stem[:_FILENAME_MAX].rstrip(" ._")


def content_disposition(title: str, session_id: str, extension: str = "mp4") -> str:
    """RFC 6266: `filename` for every client (ASCII only, else the id), and `filename*`
    (RFC 5987, UTF-8) when the title's name is not plain ASCII."""
    stem = file_stem(title)
    if not stem:
        return f'attachment; filename="{session_id}.{extension}"'
    name = f"{stem}.{extension}"
    if name.isascii():
        return f'attachment; filename="{name}"'
    return (
        f'attachment; filename="{session_id}.{extension}"; '
        f"filename*=UTF-8''{quote(name, safe='')}"
    )


def with_query(name: str, query: Mapping[str, str]) -> str:
    return f"{name}?{urlencode(query)}" if query else name


def rewrite_references(text: str, query: Mapping[str, str], etags: Mapping[str, str]) -> str:
    """A playlist or a WebVTT index whose references (lines naming a named output, maybe
    with a `#fragment`, and `URI="..."` attributes) carry `query` (a signed URL's `exp` and
    `sig`: the parts have no bearer token either) and `v`, the part's ETag, so each part is
    cacheable for good under its URL."""

    def ref(name: str) -> str:
        extra = dict(query)
        if name in etags:
            extra["v"] = etags[name]
        return with_query(name, extra)

    def line(raw: str) -> str:
        if raw.startswith("#"):
            return re.sub(r'URI="([^"?#]+)"', lambda m: f'URI="{ref(m.group(1))}"', raw)
        name, sep, fragment = raw.partition("#")
        if name and name in etags:
            return ref(name) + sep + fragment
        return raw

    return "\n".join(line(raw) for raw in text.split("\n"))


def output_url(session_id: str, name: str, query: Mapping[str, str], etag: str) -> str:
    base = f"/api/sessions/{session_id}/" + (name if name in TOP_LEVEL else f"hls/{name}")
    return with_query(base, {**query, "v": etag})


__all__ = ["HLS_PLAYLIST"]
