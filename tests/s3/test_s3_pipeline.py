"""`tapedeck up` with the S3 tier, end to end: the same AWS_* / TAPEDECK_S3_* variables, a real
SeaweedFS, a recording over WebSockets, a compile, a download: tracks, manifest and MP4 are in the
bucket, and the volume keeps no media."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import record_session, start_up, wait_settled
from s3_fixtures import S3Place
from tapedeck.api.outputs import content_disposition


def wait_for_key(client: Any, bucket: str, key: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dict(client.head_object(Bucket=bucket, Key=key))
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("downloads", ["proxy", "redirect"])
async def test_tapedeck_up_records_compiles_and_downloads_through_the_bucket(
    downloads: str,
    s3_place: S3Place,
    tmp_path: Path,
    h264_webm: Path,
    opus_webm: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_place.server.env().items():
        monkeypatch.setenv(name, value)
    up = start_up(
        tmp_path,
        s3_bucket=s3_place.bucket,
        s3_prefix=s3_place.prefix,
        s3_part_size=str(5 * 1024 * 1024),
        speculative_compiles="0",
        s3_downloads=downloads,
    )
    client: Any = s3_place.server.client()
    base = f"{s3_place.prefix}sessions"
    try:
        with httpx.Client(base_url=up.url, timeout=30) as api:
            sid = await record_session(up.ws_base, api, h264_webm, opus_webm)
            video = wait_for_key(client, s3_place.bucket, f"{base}/{sid}/video.webm")
            audio = wait_for_key(client, s3_place.bucket, f"{base}/{sid}/audio.webm")
            assert video["ContentLength"] == h264_webm.stat().st_size
            assert audio["ContentLength"] == opus_webm.stat().st_size

            assert api.post(f"/api/compile-video/{sid}").status_code == 202
            seen = wait_settled(api, sid)
            assert seen[-1]["state"] == "ready", seen[-1]
            title = "Équipe weekly"
            assert api.patch(f"/api/sessions/{sid}", json={"title": title}).status_code == 200
            answer = api.get(f"/api/download/{sid}")
            if downloads == "redirect":
                # The api answers with a presigned GET of the store and moves no media bytes.
                assert answer.status_code == 307, answer.text
                location = answer.headers["location"]
                assert location.startswith(s3_place.server.endpoint)
                assert "X-Amz-Signature=" in location
                download = httpx.get(location)
                ranged = httpx.get(location, headers={"Range": "bytes=4-7"})
            else:
                download = answer
                ranged = api.get(f"/api/download/{sid}", headers={"Range": "bytes=4-7"})
            assert download.status_code == 200
            # Named after the title in both modes (the store answers the signed disposition).
            assert download.headers["content-disposition"] == content_disposition(title, sid)
            assert download.content[4:8] == b"ftyp"
            stored = client.get_object(Bucket=s3_place.bucket, Key=f"{base}/{sid}/{sid}.mp4")
            assert stored["Body"].read() == download.content
            assert ranged.status_code == 206 and ranged.content == b"ftyp"

            deadline = time.monotonic() + 30
            while True:  # the manifest copy follows the owner's saves
                manifest = json.loads(
                    client.get_object(Bucket=s3_place.bucket, Key=f"{base}/{sid}/session.json")[
                        "Body"
                    ].read()
                )
                if manifest["state"] == "ready" or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert manifest["state"] == "ready"

        def media_blocks() -> int:
            files = [p for p in (up.data_dir / sid).iterdir() if p.suffix in (".webm", ".mp4")]
            return sum(p.stat().st_blocks for p in files)

        deadline = time.monotonic() + 30
        while media_blocks() and time.monotonic() < deadline:
            time.sleep(0.2)  # the trim follows the completion
        assert media_blocks() == 0, "media left on the volume"
    finally:
        up.stop()
