"""The S3 tier (storage/s3tier.py) against a real SeaweedFS: tracks ship while they record as one
multipart upload of equal parts, the volume keeps a bounded tail, a finished track is completed,
a restart continues the same upload, outputs and manifests go to the bucket, presigned GETs."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from s3_fixtures import S3Place
from tapedeck.sessions import State
from tapedeck.storage.backend import Backend
from tapedeck.storage.errors import Unavailable
from tapedeck.storage.records import SessionRecord, TrackRecord, now_ms
from tapedeck.storage.s3tier import S3TieredBackend

MiB = 1024 * 1024
PART = 5 * MiB


def wait_until(check: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def tier(s3_place: S3Place, tmp_path: Path) -> Iterator[Callable[..., S3TieredBackend]]:
    """Calling it opens the tier over the test's volume and prefix; again: a restart."""
    opened: list[S3TieredBackend] = []

    def open_tier(**overrides: object) -> S3TieredBackend:
        backend = S3TieredBackend(tmp_path / "volume", s3_place.settings(**overrides))
        opened.append(backend)
        return backend

    yield open_tier
    for backend in opened:
        backend.close()


def session(backend: Backend, sid: str, *tracks: str) -> SessionRecord:
    created = now_ms()
    record = SessionRecord(
        id=sid,
        created_at_ms=created,
        expires_at_ms=created + 3_600_000,
        tracks={t: TrackRecord(name=t, mime_type="video/webm") for t in tracks},
    )
    backend.save(record)
    return record


def finish(backend: Backend, record: SessionRecord) -> None:
    for track in record.tracks.values():
        track.finished = True
    record.state = State.RECORDED
    backend.save(record)


def state_file(volume: Path, sid: str, track: str) -> dict[str, Any]:
    path = volume / sid / f".{track}.upload.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def test_a_track_ships_while_it_records_and_completes_on_finish(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    backend = tier(volume_tail=PART)
    volume = tmp_path / "volume"
    record = session(backend, "ships-while-recording", "video")
    data = os.urandom(4 * PART + 12345)
    sink = backend.open_track(record.id, "video", new=True)
    try:
        for i in range(0, len(data), MiB):
            assert sink.append([data[i : i + MiB]]) == min(len(data), i + MiB)
        # Four whole parts are durable: all four ship before the track finishes.
        shipped = wait_until(
            lambda: len(state_file(volume, record.id, "video").get("parts", [])) == 4,
            what="4 parts shipped",
        )
        assert shipped
        state = state_file(volume, record.id, "video")
        assert [p["size"] for p in state["parts"]] == [PART] * 4
        assert not state["completed"]
        # The volume keeps the unshipped 12345 bytes plus a tail of one part, not 4 parts.
        # (The mark is saved before the hole is punched: wait for the blocks themselves.)
        wait_until(
            lambda: allocated(volume / record.id / "video.webm") <= PART + 12345 + 2 * 4096,
            what="the volume trimmed to its tail",
        )
        assert state_file(volume, record.id, "video")["punched"] >= 3 * PART - 4096
        # Bytes still on the volume read from it; punched ones wait for the object.
        tail = b"".join(backend.read(record.id, "video", 4 * PART, 0))
        assert tail == data[4 * PART :]
        with pytest.raises(Unavailable, match="readable once the track finishes"):
            b"".join(backend.read(record.id, "video", 0, 10))
    finally:
        sink.close()
    finish(backend, record)
    wait_until(lambda: state_file(volume, record.id, "video").get("completed"), what="completed")
    client: Any = s3_place.server.client()
    key = f"{s3_place.prefix}sessions/{record.id}/video.webm"
    head = client.head_object(Bucket=s3_place.bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-5"), "one upload of 5 parts"
    assert b"".join(backend.read(record.id, "video", 0, 0)) == data
    assert b"".join(backend.read(record.id, "video", PART - 3, 6)) == data[PART - 3 : PART + 3]
    assert backend.size(record.id, "video") == len(data)
    wait_until(
        lambda: allocated(volume / record.id / "video.webm") == 0,
        what="the volume keeping nothing of a complete track",
    )
    manifest = client.get_object(
        Bucket=s3_place.bucket, Key=f"{s3_place.prefix}sessions/{record.id}/session.json"
    )
    assert wait_until(
        lambda: (
            json.loads(
                client.get_object(
                    Bucket=s3_place.bucket,
                    Key=f"{s3_place.prefix}sessions/{record.id}/session.json",
                )["Body"].read()
            )["state"]
            == "recorded"
        ),
        what="the manifest in the bucket",
    )
    assert manifest["ContentType"] == "application/json"


def test_a_restart_continues_the_same_upload(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    first = tier()
    record = session(first, "restart-same-upload", "audio")
    data = os.urandom(3 * PART + 7)
    sink = first.open_track(record.id, "audio", new=True)
    sink.append([data[: 2 * PART + 100]])
    sink.close()
    wait_until(lambda: len(state_file(volume, record.id, "audio").get("parts", [])) == 2)
    upload_id = state_file(volume, record.id, "audio")["upload_id"]
    first.close()  # what a kill leaves: the state file and the volume's tail

    second = tier()
    assert [r.id for r in second.load_all()] == [record.id]
    assert second.size(record.id, "audio") == 2 * PART + 100
    sink = second.open_track(record.id, "audio", new=False)
    try:
        assert sink.append([data[2 * PART + 100 :]]) == len(data)
    finally:
        sink.close()
    finish(second, record)
    wait_until(lambda: state_file(volume, record.id, "audio").get("completed"), what="completed")
    state = state_file(volume, record.id, "audio")
    assert state["upload_id"] == upload_id, "the restart began another upload"
    assert [p["number"] for p in state["parts"]] == [1, 2, 3, 4]
    assert b"".join(second.read(record.id, "audio", 0, 0)) == data
    client: Any = s3_place.server.client()
    left = client.list_multipart_uploads(Bucket=s3_place.bucket, Prefix=s3_place.prefix)
    assert left.get("Uploads", []) == []


def test_a_short_track_is_one_object_and_a_delete_empties_the_prefix(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    backend = tier()
    record = session(backend, "short-track-put", "screen")
    sink = backend.open_track(record.id, "screen", new=True)
    sink.append([b"tiny"])
    sink.close()
    finish(backend, record)
    volume = tmp_path / "volume"
    wait_until(lambda: state_file(volume, record.id, "screen").get("completed"))
    assert b"".join(backend.read(record.id, "screen", 1, 2)) == b"in"
    backend.delete(record.id)
    client: Any = s3_place.server.client()
    listed = client.list_objects_v2(Bucket=s3_place.bucket, Prefix=s3_place.prefix)
    assert listed.get("Contents", []) == []


def test_the_output_goes_to_the_bucket_and_downloads_by_presigned_url(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    backend = tier()
    record = session(backend, "output-presigned")
    data = os.urandom(2 * PART + 999)  # a multipart upload of three parts
    output = backend.open_output(record.id)
    try:
        output.append([data])
        etag = output.publish()
    finally:
        output.close()
    assert len(etag) == 32
    assert not list((tmp_path / "volume" / record.id).glob("*.mp4")), "left on the volume"
    assert backend.size(record.id, "output") == len(data)
    url = backend.presign_read(record.id, "output", 60, "my talk.mp4")
    answer = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert answer.status_code == 206
    assert answer.content == data[10:20]
    assert answer.headers["content-disposition"] == 'attachment; filename="my talk.mp4"'
    assert httpx.get(url).content == data


def test_the_lifecycle_rule_for_abandoned_uploads_is_set(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place
) -> None:
    backend = tier(lifecycle_days=2)
    backend.set_lifecycle_rule()
    client: Any = s3_place.server.client()
    rules = client.get_bucket_lifecycle_configuration(Bucket=s3_place.bucket)["Rules"]
    mine = [r for r in rules if r["ID"] == "tapedeck-abort-incomplete-multipart"]
    assert mine and mine[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 2


def test_a_volume_from_before_the_tier_keeps_its_outputs_and_ships_its_tracks(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    """Turning the tier on over an existing volume: finished tracks ship, and outputs published
    before (only on the volume) stay readable."""
    from tapedeck.storage.local import LocalBackend

    volume = tmp_path / "volume"
    local = LocalBackend(volume)
    record = session(local, "from-before-the-tier", "video")
    sink = local.open_track(record.id, "video", new=True)
    sink.append([b"old recording"])
    sink.close()
    output = local.open_output(record.id)
    output.append([b"old mp4"])
    output.publish()
    output.close()
    record.tracks["video"].finished = True
    record.state = State.READY
    local.save(record)

    backend = tier()
    assert [r.id for r in backend.load_all()] == [record.id]
    assert backend.size(record.id, "output") == len(b"old mp4")
    assert b"".join(backend.read(record.id, "output", 4, 0)) == b"mp4"
    wait_until(lambda: state_file(volume, record.id, "video").get("completed"), what="shipped")
    assert b"".join(backend.read(record.id, "video", 0, 0)) == b"old recording"


def test_appends_below_a_part_do_not_wake_the_shipper(
    tier: Callable[..., S3TieredBackend], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Hundreds of live tracks ack several times a second each: an append that does not
    complete a part must not cost a shipper round (a task and a thread hop). The rounds are
    counted by wrapping the tier's own `_ship`."""
    backend = tier()
    rounds: list[tuple[str, str]] = []
    ship = S3TieredBackend._ship

    async def counted(self: S3TieredBackend, key: tuple[str, str]) -> None:
        rounds.append(key)
        await ship(self, key)

    monkeypatch.setattr(S3TieredBackend, "_ship", counted)
    record = session(backend, "appends-below-a-part", "video")
    sink = backend.open_track(record.id, "video", new=True)
    try:
        wait_until(lambda: rounds, what="the first round (the track is new to the shipper)")
        time.sleep(0.5)
        before = len(rounds)
        for _ in range(200):
            sink.append([b"x" * 1000])
            time.sleep(0.002)  # acks come apart, as from many connections
        time.sleep(1)
        assert len(rounds) - before <= 2, f"{len(rounds) - before} rounds for 200 small appends"
        # A whole part still wakes it: the part ships.
        sink.append([os.urandom(PART)])
        wait_until(
            lambda: len(state_file(tmp_path / "volume", record.id, "video").get("parts", [])),
            what="the part shipped",
        )
    finally:
        sink.close()


def test_a_part_is_held_in_memory_once_while_it_ships(
    tier: Callable[..., S3TieredBackend], tmp_path: Path
) -> None:
    """Hundreds of live tracks keep up to PARTS_IN_FLIGHT parts in the air: each must cost its
    size once, not twice (a bytes body is wrapped in a BytesIO by botocore, which aiohttp then
    copies to measure it). Python's own allocation tracer counts every thread's memory."""
    backend = tier()
    record = session(backend, "a-part-held-once", "video")
    data = os.urandom(PART)
    sink = backend.open_track(record.id, "video", new=True)
    tracemalloc.start()
    try:
        sink.append([data])
        wait_until(
            lambda: len(state_file(tmp_path / "volume", record.id, "video").get("parts", [])),
            what="the part shipped",
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        sink.close()
    assert peak < 1.5 * PART, f"{peak / MiB:.1f} MiB traced at peak for one {PART // MiB} MiB part"
