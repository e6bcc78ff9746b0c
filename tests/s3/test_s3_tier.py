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


# --- outputs shipped as they grow (issue 18: the live mux's MP4) -----------------------------


def mp4_placeholder(reserve: int) -> bytes:
    """What FFmpeg's `-moov_size` mux writes first: ftyp, the reserve, the 8-byte placeholder
    and the media box's header; the real head (same length) replaces it at the end."""
    data = (24).to_bytes(4, "big") + b"ftyp" + bytes(16)
    data += reserve.to_bytes(4, "big") + b"free" + bytes(reserve - 8)
    return data + (8).to_bytes(4, "big") + b"free" + (0).to_bytes(4, "big") + b"mdat"


def output_upload(volume: Path, sid: str) -> dict[str, Any]:
    found = list((volume / sid).glob(".output.*.output-upload.json"))
    return dict(json.loads(found[0].read_text())) if found else {}


def uploads(s3_place: S3Place) -> list[dict[str, Any]]:
    client: Any = s3_place.server.client()
    answer = client.list_multipart_uploads(Bucket=s3_place.bucket, Prefix=s3_place.prefix)
    return list(answer.get("Uploads", []))


def uploaded_parts(s3_place: S3Place, sid: str, upload_id: str) -> list[int]:
    client: Any = s3_place.server.client()
    answer = client.list_parts(
        Bucket=s3_place.bucket,
        Key=f"{s3_place.prefix}sessions/{sid}/{sid}.mp4",
        UploadId=upload_id,
    )
    return [p["PartNumber"] for p in answer.get("Parts", [])]


def test_seaweedfs_takes_the_last_upload_of_a_part_number(s3_place: S3Place) -> None:
    """What the head rewrite relies on: uploading a part number again replaces that part ("If
    you upload a new part using the same part number that was used with a previous part, the
    previously uploaded part is overwritten", AWS S3 API reference, UploadPart). SeaweedFS
    keeps both uploads (ListParts lists part 1 twice) and completes with the one whose ETag the
    completion names: the tier names the last one's, so the object has the last bytes."""
    client: Any = s3_place.server.client()
    key = f"{s3_place.prefix}last-part-wins"
    upload_id = client.create_multipart_upload(Bucket=s3_place.bucket, Key=key)["UploadId"]

    def part(number: int, data: bytes) -> dict[str, Any]:
        answer = client.upload_part(
            Bucket=s3_place.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    part(1, b"a" * PART)
    second = part(2, b"tail")
    again = part(1, b"b" * PART)
    listed = client.list_parts(Bucket=s3_place.bucket, Key=key, UploadId=upload_id)["Parts"]
    assert (1, again["ETag"]) in [(p["PartNumber"], p["ETag"]) for p in listed]
    client.complete_multipart_upload(
        Bucket=s3_place.bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [again, second]},
    )
    body = client.get_object(Bucket=s3_place.bucket, Key=key)["Body"].read()
    assert body == b"b" * PART + b"tail"


@pytest.mark.parametrize(
    "reserve", [MiB, 7 * MiB], ids=["head-in-part-1", "head-over-parts-1-and-2"]
)
def test_a_growing_output_ships_while_it_grows_and_its_head_is_rewritten_in_the_bucket(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path, reserve: int
) -> None:
    """The live mux's MP4 with the tier: every whole part ships while it grows and leaves the
    volume, but for the parts holding the head; the head rewrite lands in the bucket (those
    parts uploaded again), and the object equals what the volume-only backend publishes for
    the same upload, ETag included."""
    from tapedeck.storage.local import LocalBackend
    from tapedeck.storage.shipping import head_window

    backend = tier()
    volume = tmp_path / "volume"
    record = session(backend, f"growing-output-{reserve // MiB}")
    placeholder = mp4_placeholder(reserve)
    head, body = os.urandom(len(placeholder)), os.urandom(6 * PART + 777)
    data = placeholder + body
    window = head_window(len(placeholder), PART)
    partial = volume / record.id / f".{record.id}.mp4.partial"
    slack = 2 * 4096
    peak = 0

    def shipped_and_trimmed(whole: int, committed: int) -> None:
        wait_until(lambda: output_upload(volume, record.id), what="the upload's state")
        upload_id = output_upload(volume, record.id)["upload_id"]
        wait_until(
            lambda: len(uploaded_parts(s3_place, record.id, upload_id)) == whole,
            what=f"{whole} parts shipped",
        )
        # The head window and what is not shipped stay; shipped parts beyond the head go.
        kept = committed if whole * PART <= window else window + committed - whole * PART
        wait_until(
            lambda: allocated(partial) <= kept + slack,
            what=f"the volume trimmed to {kept} bytes",
        )

    output = backend.open_output(record.id)
    try:
        for at in range(0, len(data), MiB):
            committed = output.append([data[at : at + MiB]])
            whole = committed // PART
            if whole and committed - MiB < whole * PART:  # a part just filled: it ships
                shipped_and_trimmed(whole, committed)
            peak = max(peak, allocated(partial))
        for at in range(0, len(head), 3 * MiB):
            output.rewrite(at, head[at : at + 3 * MiB])
        etag = output.publish()
    finally:
        output.close()
    # The volume held the head window and less than a part of unshipped bytes, never the MP4.
    assert peak <= window + PART + slack, f"{peak / MiB:.1f} MiB on the volume"
    assert peak < len(data) / 2
    assert not partial.exists() and not list((volume / record.id).glob("*.mp4*"))
    assert not list((volume / record.id).glob("*.output-upload.json"))
    assert uploads(s3_place) == []
    client: Any = s3_place.server.client()
    key = f"{s3_place.prefix}sessions/{record.id}/{record.id}.mp4"
    stored = client.get_object(Bucket=s3_place.bucket, Key=key)["Body"].read()
    assert stored[: len(head)] == head, "the head rewrite is not in the object"
    assert stored == head + body
    count = -(-len(data) // PART)
    stored_etag = client.head_object(Bucket=s3_place.bucket, Key=key)["ETag"].strip('"')
    assert stored_etag.endswith(f"-{count}"), "one multipart upload of equal parts"
    # The same upload through the volume-only backend: the same file, the same ETag.
    local = LocalBackend(tmp_path / "local")
    session(local, record.id)
    plain = local.open_output(record.id)
    try:
        for at in range(0, len(data), MiB):
            plain.append([data[at : at + MiB]])
        for at in range(0, len(head), 3 * MiB):
            plain.rewrite(at, head[at : at + 3 * MiB])
        assert plain.publish() == etag
    finally:
        plain.close()
    assert (tmp_path / "local" / record.id / f"{record.id}.mp4").read_bytes() == stored
    assert b"".join(backend.read(record.id, "output", 0, 0)) == stored


def test_a_rewrite_of_bytes_already_trimmed_is_refused_not_lost(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    """An output with no MP4 head keeps part 1 only: a rewrite there lands in the object; one
    in a part already shipped and trimmed is refused (the writer uploads again), never
    published without its bytes."""
    backend = tier()
    volume = tmp_path / "volume"
    record = session(backend, "rewrite-trimmed")
    data = b"\xff\xd8" + os.urandom(3 * PART)
    partial = volume / record.id / f".{record.id}.mp4.partial"
    output = backend.open_output(record.id)
    try:
        output.append([data])
        wait_until(lambda: output_upload(volume, record.id), what="the upload's state")
        upload_id = output_upload(volume, record.id)["upload_id"]
        wait_until(lambda: len(uploaded_parts(s3_place, record.id, upload_id)) == 3)
        wait_until(lambda: allocated(partial) <= 2 * PART + 2 * 4096, what="parts 2-3 trimmed")
        with pytest.raises(Unavailable, match="trimmed"):
            output.rewrite(2 * PART + 5, b"x")
        output.rewrite(0, b"y" * 10)
        output.publish()
    finally:
        output.close()
    assert b"".join(backend.read(record.id, "output", 0, 0)) == b"y" * 10 + data[10:]


def test_an_output_upload_nobody_completes_is_aborted(
    tier: Callable[..., S3TieredBackend], s3_place: S3Place, tmp_path: Path
) -> None:
    """A stream that broke, a newer compile's output, a deleted session, a restart: each
    leaves no multipart upload behind (a restart finds the former run's by its state file)."""
    backend = tier()
    volume = tmp_path / "volume"

    # A stream that broke: its sink is closed unpublished.
    broke = session(backend, "output-stream-broke")
    output = backend.open_output(broke.id)
    output.append([os.urandom(PART + 10)])
    wait_until(lambda: len(uploads(s3_place)) == 1, what="the upload")
    output.close()
    wait_until(lambda: not uploads(s3_place), what="the upload aborted after the close")
    wait_until(lambda: not output_upload(volume, broke.id), what="its state file gone")

    # A newer output of the same session (a newer compile) voids the older one's upload.
    older = backend.open_output(broke.id)
    older.append([os.urandom(PART + 10)])
    wait_until(lambda: len(uploads(s3_place)) == 1, what="the older upload")
    newer = backend.open_output(broke.id)
    try:
        wait_until(lambda: not uploads(s3_place), what="the older upload aborted")
        newer.append([b"the newer output"])
        newer.publish()
    finally:
        newer.close()
        older.close()
    assert b"".join(backend.read(broke.id, "output", 0, 0)) == b"the newer output"

    # A deleted session.
    deleted = session(backend, "output-session-deleted")
    output = backend.open_output(deleted.id)
    try:
        output.append([os.urandom(2 * PART)])
        wait_until(lambda: len(uploads(s3_place)) == 1, what="the upload")
        backend.delete(deleted.id)
        assert uploads(s3_place) == []
    finally:
        output.close()

    # A restart: the process ends with an upload open; the next start aborts it.
    restarted_id = session(backend, "output-restart").id
    output = backend.open_output(restarted_id)
    output.append([os.urandom(PART + 10)])
    wait_until(lambda: len(uploads(s3_place)) == 1, what="the upload")
    wait_until(lambda: output_upload(volume, restarted_id), what="its state file")
    backend.close()  # killed: nothing more runs
    assert len(uploads(s3_place)) == 1
    again = tier()
    assert sorted(r.id for r in again.load_all()) == sorted([broke.id, restarted_id])
    wait_until(lambda: not uploads(s3_place), what="the former run's upload aborted")
    wait_until(lambda: not output_upload(volume, restarted_id), what="its state file gone")
    assert not (volume / restarted_id / f".{restarted_id}.mp4.partial").exists()
    output.close()


def test_the_live_mux_of_an_h264_recording_ships_through_the_tier(
    s3_place: S3Place, h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    """End to end with the follower (tests/embedded/test_follow.py's flow) and the tier: the MP4
    uploaded while recording and its head rewrite reach the bucket through the tier's output
    sink (same packets as a one-shot compile), and the volume keeps no MP4 and no upload."""
    from embedded.test_follow import compiled_while_recording

    from harness import make_stack

    stack = make_stack(tmp_path, s3_bucket=s3_place.bucket)
    stack.env.update(s3_place.env())
    stack.env["TAPEDECK_S3_PART_SIZE"] = str(PART)
    stack.start()
    try:
        tracks = [
            ("video", h264_webm, "video/webm;codecs=h264"),
            ("audio", opus_webm, "audio/webm"),
        ]
        got, log = compiled_while_recording(
            stack, tracks, tmp_path, halfway="compiling while recording, the"
        )
    finally:
        stack.stop()
    assert "published the MP4 uploaded while recording" in log
    client: Any = s3_place.server.client()
    listed = client.list_objects_v2(Bucket=s3_place.bucket, Prefix=s3_place.prefix)
    mp4 = [o for o in listed.get("Contents", []) if o["Key"].endswith(".mp4")]
    assert [o["Size"] for o in mp4] == [got.stat().st_size]
    assert uploads(s3_place) == []
    assert not list(stack.data_dir.glob("*/*.mp4*")), "an MP4 left on the volume"
    assert not list(stack.data_dir.glob("*/*.output-upload.json"))
