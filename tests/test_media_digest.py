"""`media.packet_digest`, the tests' "same media content" check (follow, rolling updates)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from media import packet_digest


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def test_the_digest_is_the_packets_not_how_the_muxer_interleaves_them(
    h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    """A staged compile and a one-shot one interleave the streams' last packets differently
    when a track ends early (seen on the real node: same packets, other order)."""
    mp4 = tmp_path / "one.mp4"
    ffmpeg("-i", str(h264_webm), "-i", str(opus_webm), "-c:v", "copy", "-c:a", "aac", str(mp4))
    other_layout = tmp_path / "chunks.mp4"
    ffmpeg("-i", str(mp4), "-c", "copy", "-chunk_duration", "3000000", str(other_layout))
    assert packet_digest(other_layout) == packet_digest(mp4)
    shorter = tmp_path / "shorter.mp4"
    ffmpeg("-i", str(mp4), "-c", "copy", "-t", "2", str(shorter))
    assert packet_digest(shorter) != packet_digest(mp4)
