"""The backend contract (storage/backend.py), checked the same way for every backend.

Every backend in tests/backend_stores.py `BACKENDS` must pass this module unchanged: adding a
backend adds a param there, never a branch here. The calls are the blocking ones the storage
server makes from its worker threads.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend_stores import BACKENDS, Store, StoreFactory

from tapedeck.storage.backend import Backend, close_backend
from tapedeck.storage.errors import InvalidArgument, NotFound, OutOfRange, StorageFull
from tapedeck.storage.records import SessionRecord, TrackRecord, now_ms

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(params=BACKENDS)
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    factory: StoreFactory = request.param
    return factory


class Opened:
    """Backends opened by a test, closed at its end (the `Closing` capability)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.backends: list[Backend] = []

    def __call__(self) -> Backend:
        backend = self.store.backend()
        self.backends.append(backend)
        return backend

    def close(self) -> None:
        for backend in self.backends:
            close_backend(backend)


@pytest.fixture
def backend_factory(store_factory: StoreFactory, tmp_path: Path) -> Iterator[Opened]:
    """Calling it gives a backend over the test's store; calling again is a restart."""
    with store_factory(tmp_path, None) as store:
        opened = Opened(store)
        try:
            yield opened
        finally:
            opened.close()


@pytest.fixture
def small_backend_factory(store_factory: StoreFactory, tmp_path: Path) -> Iterator[Opened]:
    """The same over a volume of 4 MiB."""
    with store_factory(tmp_path, 4 * MiB) as store:
        opened = Opened(store)
        try:
            yield opened
        finally:
            opened.close()


_counter = iter(range(1_000_000))


def new_session(backend: Backend, *tracks: str) -> SessionRecord:
    """A saved manifest (the server saves one before it opens any object of a session)."""
    created = now_ms()
    record = SessionRecord(
        id=f"conformance-{next(_counter):04d}",
        created_at_ms=created,
        expires_at_ms=created + 3_600_000,
        tracks={t: TrackRecord(name=t, mime_type="video/webm") for t in tracks},
    )
    backend.save(record)
    return record


def read_all(backend: Backend, session_id: str, obj: str, offset: int = 0, limit: int = 0) -> bytes:
    return b"".join(backend.read(session_id, obj, offset, limit))


def publish(backend: Backend, session_id: str, data: bytes) -> str:
    output = backend.open_output(session_id)
    try:
        assert output.append([data[: len(data) // 2], data[len(data) // 2 :]]) == len(data)
        return output.publish()
    finally:
        output.close()


def test_append_returns_the_durable_size(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    sid = new_session(backend, "video").id
    sink = backend.open_track(sid, "video", new=True)
    try:
        assert sink.size == 0
        assert sink.append([b"ab", b"cd"]) == 4
        assert sink.size == 4
        assert sink.append([b"e" * 100_000]) == 100_004
        assert sink.append([]) == 100_004
    finally:
        sink.close()
    assert backend.size(sid, "video") == 100_004
    assert read_all(backend, sid, "video") == b"abcd" + b"e" * 100_000


def test_a_reopened_track_continues_at_its_durable_size(
    backend_factory: Callable[[], Backend],
) -> None:
    backend = backend_factory()
    sid = new_session(backend, "audio").id
    sink = backend.open_track(sid, "audio", new=True)
    sink.append([b"first "])
    sink.close()
    restarted = backend_factory()
    assert restarted.size(sid, "audio") == 6
    sink = restarted.open_track(sid, "audio", new=False)
    try:
        assert sink.size == 6
        assert sink.append([b"second"]) == 12
    finally:
        sink.close()
    assert read_all(backend_factory(), sid, "audio") == b"first second"


def test_a_new_track_starts_empty_whatever_its_name_held(
    backend_factory: Callable[[], Backend],
) -> None:
    """Bytes left under a reused id (an interrupted delete) are never the new track's."""
    backend = backend_factory()
    sid = new_session(backend, "screen").id
    sink = backend.open_track(sid, "screen", new=True)
    sink.append([b"old bytes"])
    sink.close()
    sink = backend.open_track(sid, "screen", new=True)
    try:
        assert sink.size == 0
        assert backend.size(sid, "screen") == 0
        assert sink.append([b"new"]) == 3
    finally:
        sink.close()
    assert read_all(backend, sid, "screen") == b"new"


def test_a_full_volume_refuses_an_append_and_cuts_back_what_it_wrote(
    small_backend_factory: Callable[[], Backend],
) -> None:
    backend = small_backend_factory()
    filler = new_session(backend, "video").id
    sink = backend.open_track(filler, "video", new=True)
    sink.append([os.urandom(MiB)])
    sink.close()
    sid = new_session(backend, "video").id
    sink = backend.open_track(sid, "video", new=True)
    written = b""
    try:
        with pytest.raises(StorageFull) as full:
            for _ in range(100):
                chunk = os.urandom(256 * KiB)
                assert sink.append([chunk[:100_000], chunk[100_000:]]) == len(written) + len(chunk)
                written += chunk
        assert full.value.reason == "disk-full"
        assert written, "the volume was full before the first append"
        assert sink.size == len(written), "the refused append's bytes were not cut back"
        assert backend.size(sid, "video") == len(written)
        assert read_all(backend, sid, "video") == written
        backend.delete(filler)  # space returns: the same sink takes appends again
        assert sink.append([b"after"]) == len(written) + 5
    finally:
        sink.close()
    restarted = small_backend_factory()
    assert restarted.size(sid, "video") == len(written) + 5
    assert read_all(restarted, sid, "video") == written + b"after"


def test_publish_returns_an_etag_that_validates_the_content(
    backend_factory: Callable[[], Backend],
) -> None:
    backend = backend_factory()
    a, b = new_session(backend).id, new_session(backend).id
    first = os.urandom(300 * KiB)
    etag = publish(backend, a, first)
    assert etag
    assert backend.size(a, "output") == len(first)
    assert read_all(backend, a, "output") == first
    assert publish(backend, b, first) == etag, "the same bytes must have the same ETag"
    changed = first[:-1] + bytes([first[-1] ^ 1])
    assert publish(backend, b, changed) != etag, "other bytes must have another ETag"
    assert read_all(backend_factory(), b, "output") == changed


def grown(backend: Backend, session_id: str, head: bytes, body: bytes) -> str:
    """An MP4 uploaded as it grows: a placeholder head, the body, then the real head."""
    output = backend.open_output(session_id)
    try:
        output.append([bytes(len(head))])
        output.append([body[: len(body) // 2]])
        output.append([body[len(body) // 2 :]])
        output.rewrite(0, head[:1000])  # one region, in pieces (a message is at most 8 MiB)
        output.rewrite(1000, head[1000:])
        return output.publish()
    finally:
        output.close()


def test_an_output_may_rewrite_its_committed_head_once(
    backend_factory: Callable[[], Backend],
) -> None:
    """The final mux that runs while recording fills the MP4's head in at the end."""
    backend = backend_factory()
    a, b, c = (new_session(backend).id for _ in range(3))
    head, body = os.urandom(64 * KiB), os.urandom(700 * KiB)
    etag = grown(backend, a, head, body)
    assert backend.size(a, "output") == len(head) + len(body)
    assert read_all(backend_factory(), a, "output") == head + body
    assert grown(backend, b, head, body) == etag, "the same upload must have the same ETag"
    other = head[:-1] + bytes([head[-1] ^ 1])
    assert grown(backend, c, other, body) != etag, "another head must have another ETag"
    assert read_all(backend, c, "output") == other + body

    output = backend.open_output(a)
    try:
        output.append([b"x" * 100])
        with pytest.raises(OutOfRange):
            output.rewrite(90, b"y" * 11)  # beyond the committed bytes
        output.rewrite(10, b"y" * 5)
        with pytest.raises(OutOfRange):
            output.rewrite(0, b"z")  # a second region
        output.append([b"tail"])
        with pytest.raises(OutOfRange):
            output.rewrite(15, b"z")  # the region ended with the append
        output.publish()
    finally:
        output.close()
    assert read_all(backend, a, "output") == b"x" * 10 + b"y" * 5 + b"x" * 85 + b"tail"


def test_a_large_output_grows_in_many_appends_and_rewrites_a_head_of_several_mib(
    backend_factory: Callable[[], Backend],
) -> None:
    """The live mux of a long recording: an MP4 of many parts (of any backend's part size)
    uploaded in 1 MiB appends, whose head (reserved up front, several MiB for an hour) is
    rewritten at the end in pieces; the published object is the rewritten file, its ETag the
    write log's, equal to another upload of the same log."""
    backend = backend_factory()
    a, b = new_session(backend).id, new_session(backend).id
    reserve = 7 * MiB  # more than one part where parts are 5 MiB (the tier's tests)
    placeholder = (24).to_bytes(4, "big") + b"ftyp" + bytes(16)
    placeholder += reserve.to_bytes(4, "big") + b"free" + bytes(reserve - 8)
    placeholder += (8).to_bytes(4, "big") + b"free" + (0).to_bytes(4, "big") + b"mdat"
    head = os.urandom(len(placeholder))
    body = os.urandom(14 * MiB + 4321)
    etags = []
    for sid in (a, b):
        output = backend.open_output(sid)
        try:
            data = placeholder + body
            for at in range(0, len(data), MiB):
                assert output.append([data[at : at + MiB]]) == min(len(data), at + MiB)
            for at in range(0, len(head), 3 * MiB):  # a message is at most 8 MiB
                output.rewrite(at, head[at : at + 3 * MiB])
            etags.append(output.publish())
        finally:
            output.close()
    assert etags[0] == etags[1]
    expected = head + body
    assert backend.size(a, "output") == len(expected)
    got = read_all(backend_factory(), a, "output")
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert read_all(backend, b, "output", len(head) - 10, 20) == expected[len(head) - 10 :][:20]


def test_an_output_is_invisible_until_published(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    sid = new_session(backend).id
    output = backend.open_output(sid)
    try:
        output.append([b"half an mp4"])
        with pytest.raises(NotFound):
            read_all(backend, sid, "output")
    finally:
        output.close()
    publish(backend, sid, b"the first output")
    output = backend.open_output(sid)  # a retried compile, writing over it
    try:
        output.append([b"the second, unfinished"])
        assert read_all(backend, sid, "output") == b"the first output"
        etag = output.publish()
    finally:
        output.close()
    assert read_all(backend, sid, "output") == b"the second, unfinished"
    assert etag == publish(backend, new_session(backend).id, b"the second, unfinished")


def test_ranged_reads(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    sid = new_session(backend, "video").id
    data = hashlib.sha256(b"seed").digest() * (80 * KiB)  # 2.5 MiB: crosses read chunks
    sink = backend.open_track(sid, "video", new=True)
    sink.append([data])
    sink.close()
    publish(backend, sid, data)
    for obj in ("video", "output"):
        assert read_all(backend, sid, obj) == data
        assert read_all(backend, sid, obj, 3, 4) == data[3:7]
        assert read_all(backend, sid, obj, MiB - 10, 20) == data[MiB - 10 : MiB + 10]
        assert read_all(backend, sid, obj, 2 * MiB) == data[2 * MiB :]
        assert read_all(backend, sid, obj, len(data)) == b""
        assert read_all(backend, sid, obj, len(data) - 1, 100) == data[-1:]


def test_a_manifest_round_trips(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    record = new_session(backend, "video", "audio")
    assert backend.load(record.id) == record
    changed = record.model_copy(update={"error": "é" * 10, "progress": 0.5})
    backend.save(changed)
    restarted = backend_factory()
    assert restarted.load(record.id) == changed
    assert [r for r in restarted.load_all() if r.id == record.id] == [changed]


def test_a_delete_removes_everything_for_good(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    kept = new_session(backend, "audio")
    sid = new_session(backend, "audio").id
    sink = backend.open_track(sid, "audio", new=True)
    sink.append([b"audio"])
    sink.close()
    publish(backend, sid, b"mp4")
    backend.delete(sid)
    backend.delete(sid)  # idempotent
    for seen in (backend, backend_factory()):
        with pytest.raises(NotFound):
            seen.load(sid)
        for obj in ("audio", "output"):
            with pytest.raises(NotFound):
                read_all(seen, sid, obj)
            assert seen.size(sid, obj) == 0
        assert [r.id for r in seen.load_all()] == [kept.id]


def test_missing_things_are_not_found(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    with pytest.raises(NotFound):
        backend.load("never-created")
    sid = new_session(backend, "video").id
    with pytest.raises(NotFound):
        read_all(backend, sid, "video")
    with pytest.raises(NotFound):
        read_all(backend, sid, "output")
    assert backend.size(sid, "video") == 0
    assert backend.size(sid, "output") == 0


def test_load_all_skips_a_damaged_manifest(store_factory: StoreFactory, tmp_path: Path) -> None:
    with store_factory(tmp_path, None) as store:
        opened = Opened(store)
        try:
            backend = opened()
            damaged, whole = new_session(backend), new_session(backend)
            store.corrupt_manifest(damaged.id)
            restarted = opened()
            assert [r.id for r in restarted.load_all()] == [whole.id]
            with pytest.raises(NotFound):
                restarted.load(damaged.id)
        finally:
            opened.close()


@pytest.mark.parametrize("bad", ["../escape", "UPPER-CASE-ID", "short", "a/b/c/d/e/f", ""])
def test_session_ids_are_validated_before_any_path_or_key(
    backend_factory: Callable[[], Backend], bad: str
) -> None:
    backend = backend_factory()
    record = SessionRecord(id=bad, created_at_ms=1, expires_at_ms=2)
    calls: list[Callable[[], object]] = [
        lambda: backend.load(bad),
        lambda: backend.save(record),
        lambda: backend.delete(bad),
        lambda: backend.size(bad, "video"),
        lambda: backend.open_track(bad, "video", new=True),
        lambda: backend.open_output(bad),
        lambda: list(backend.read(bad, "video", 0, 0)),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument):
            call()


def test_object_names_are_validated(backend_factory: Callable[[], Backend]) -> None:
    backend = backend_factory()
    sid = new_session(backend).id
    for call in (
        lambda: backend.size(sid, "../session.json"),
        lambda: backend.open_track(sid, "session.json", new=True),
        lambda: backend.open_track(sid, "output", new=True),
        lambda: list(backend.read(sid, "video.webm", 0, 0)),
    ):
        with pytest.raises(InvalidArgument):
            call()


def test_named_outputs_are_outputs_of_their_own(backend_factory: Callable[[], Backend]) -> None:
    """A compile's poster, storyboard and HLS parts (issue 19): `open_output(id, name)`,
    invisible until published, beside the MP4 and gone with the session."""
    backend = backend_factory()
    sid = new_session(backend).id
    publish(backend, sid, b"the mp4")
    for name, data in (("poster.jpg", b"jpeg"), ("hls-00000.m4s", b"segment")):
        sink = backend.open_output(sid, name)
        try:
            sink.append([data])
            with pytest.raises(NotFound):
                read_all(backend, sid, name)
            assert sink.publish()
        finally:
            sink.close()
        assert read_all(backend, sid, name) == data and backend.size(sid, name) == len(data)
    assert read_all(backend, sid, "output") == b"the mp4"
    for bad in ("../poster.jpg", "video", "session.json", "poster.exe", f"{sid}.mp4x"):
        with pytest.raises(InvalidArgument):
            backend.open_output(sid, bad)
    backend.delete(sid)
    assert backend.size(sid, "poster.jpg") == 0
