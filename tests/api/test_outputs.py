"""Download names and the rewrite of playlists and indexes (pure)."""

from __future__ import annotations

import pytest

from tapedeck.api.outputs import content_disposition, file_stem, output_url, rewrite_references

SID = "0c136489-c0ad-4ddb-856c-adf166df948c"


@pytest.mark.parametrize(
    ("title", "header"),
    [
        ("Weekly sync", 'attachment; filename="Weekly sync.mp4"'),
        (
            "Réunion d'équipe",
            f'attachment; filename="{SID}.mp4"; '
            "filename*=UTF-8''R%C3%A9union%20d%27%C3%A9quipe.mp4",
        ),
        ("", f'attachment; filename="{SID}.mp4"'),
        ("../..", f'attachment; filename="{SID}.mp4"'),
        ('a/b\\c:"d"', 'attachment; filename="a_b_c_d.mp4"'),
    ],
)
def test_the_download_is_named_after_the_title(title: str, header: str) -> None:
    assert content_disposition(title, SID) == header


def test_a_file_name_never_holds_a_path_or_control_characters() -> None:
    assert file_stem("  .hidden/../x\x07y  ") == "hidden_.._x_y"
    assert len(file_stem("x" * 500)) == 120


def test_a_playlist_carries_the_signed_query_and_each_parts_etag() -> None:
    playlist = "\n".join(
        [
            "#EXTM3U",
            '#EXT-X-MAP:URI="hls-init.mp4"',
            "#EXTINF:6.0,",
            "hls-00000.m4s",
            "#EXT-X-ENDLIST",
        ]
    )
    etags = {"hls-init.mp4": "i1", "hls-00000.m4s": "s0"}
    out = rewrite_references(playlist, {"exp": "9", "sig": "abc"}, etags).split("\n")
    assert out[1] == '#EXT-X-MAP:URI="hls-init.mp4?exp=9&sig=abc&v=i1"'
    assert out[3] == "hls-00000.m4s?exp=9&sig=abc&v=s0"
    assert out[0] == "#EXTM3U" and out[2] == "#EXTINF:6.0,"
    vtt = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard.jpg#xywh=0,0,160,90\n"
    assert "storyboard.jpg?v=sp#xywh=0,0,160,90" in rewrite_references(
        vtt, {}, {"storyboard.jpg": "sp"}
    )
    assert "unknown.m4s" in rewrite_references("unknown.m4s", {}, etags)


def test_urls_of_named_outputs() -> None:
    assert output_url(SID, "poster.jpg", {}, "e") == f"/api/sessions/{SID}/poster.jpg?v=e"
    assert output_url(SID, "hls.m3u8", {"exp": "1", "sig": "s"}, "e") == (
        f"/api/sessions/{SID}/hls/hls.m3u8?exp=1&sig=s&v=e"
    )
