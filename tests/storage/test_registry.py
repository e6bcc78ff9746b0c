"""The session registry and the stream writer without gRPC: rules, transitions and leases.

The pure rules (`apply_change`, `page`) take records; the registry runs over a real
LocalBackend in a temporary directory, and Write streams are driven through their queue, as
the gRPC adapter's reader task does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tapedeck.sessions import State
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.local import LocalBackend
from tapedeck.storage.records import OutputRecord, SessionRecord, TrackRecord
from tapedeck.storage.registry import (
    Append,
    Change,
    Opening,
    SessionRegistry,
    Stream,
    WriteQueue,
    apply_change,
    check_output,
    page,
)
from tapedeck.storage.writer import QUEUE_BYTES, Ack, commit_loop


def record(state: State = State.RECORDING, generation: int = 0, **tracks: bool) -> SessionRecord:
    return SessionRecord(
        id="session-0001",
        state=state,
        created_at_ms=1_000,
        expires_at_ms=10_000_000,
        compile_generation=generation,
        tracks={t: TrackRecord(name=t, finished=done) for t, done in tracks.items()},
        output=OutputRecord(size=5, etag="old") if generation else None,
    )


# --- pure rules -------------------------------------------------------------------------------


def test_a_compare_and_set_on_state_is_refused_when_the_state_moved() -> None:
    with pytest.raises(errors.Conflict, match="is compiling"):
        apply_change(
            record(State.COMPILING),
            Change(if_state_in=frozenset({State.QUEUED}), state=State.FAILED),
            (),
        )
    done = apply_change(
        record(State.QUEUED), Change(if_state_in=frozenset({State.QUEUED}), state=State.FAILED), ()
    )
    assert done.state == State.FAILED


def test_a_condition_of_no_state_is_never_met() -> None:
    with pytest.raises(errors.Conflict):
        apply_change(record(), Change(if_state_in=frozenset(), error="x"), ())


def test_an_older_compile_is_fenced_off() -> None:
    with pytest.raises(errors.Conflict, match="superseded by compile 3"):
        apply_change(record(State.COMPILING, 3), Change(if_compile_generation=2, progress=1), ())


def test_begin_compile_raises_the_generation_and_voids_the_earlier_output() -> None:
    began = apply_change(record(State.QUEUED, 1), Change(begin_compile=True), ())
    assert (began.state, began.compile_generation, began.compile_attempts) == (
        State.COMPILING,
        2,
        1,
    )
    assert began.output is None and began.progress == 0 and began.error == ""


def test_output_metadata_never_takes_size_or_etag_from_the_caller() -> None:
    changed = apply_change(
        record(State.COMPILING, 1),
        Change(output=OutputRecord(size=99, etag="forged", duration_seconds=2.5)),
        (),
    )
    assert changed.output == OutputRecord(size=5, etag="old", duration_seconds=2.5)


def test_finishing_tracks_records_the_session_unless_a_writer_is_connected() -> None:
    finished = apply_change(record(video=False), Change(finish_tracks=True), ())
    assert finished.state == State.RECORDED and finished.tracks["video"].finished
    with pytest.raises(errors.Conflict, match="being written"):
        apply_change(record(video=False), Change(finish_tracks=True), ["video"])
    # Changes that keep it recording are allowed while it is written.
    assert apply_change(record(video=False), Change(progress=0.5), ["video"]).progress == 0.5


def test_an_expiry_beyond_the_longest_ttl_is_an_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument, match="at most"):
        apply_change(record(), Change(expires_at_ms=2**62), ())
    assert apply_change(record(), Change(expires_at_ms=10), ()).expires_at_ms == 10  # expire now


def test_pages_are_newest_first_with_a_cursor_and_a_state_filter() -> None:
    records = [
        record().model_copy(update={"id": f"session-{i:04d}", "created_at_ms": i}) for i in range(7)
    ]
    records[3].state = State.READY
    first, token = page(records, 3, "", frozenset())
    assert [r.id for r in first] == ["session-0006", "session-0005", "session-0004"]
    second, token = page(records, 3, token, frozenset())
    assert [r.id for r in second] == ["session-0003", "session-0002", "session-0001"]
    last, token = page(records, 3, token, frozenset())
    assert [r.id for r in last] == ["session-0000"] and token == ""
    ready, _ = page(records, 0, "", frozenset({State.READY}))
    assert [r.id for r in ready] == ["session-0003"]
    with pytest.raises(errors.InvalidArgument):
        page(records, 3, "not a token", frozenset())
    with pytest.raises(errors.InvalidArgument):
        page(records, -1, "", frozenset())


# --- the registry over a real backend ---------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", max_session_bytes=10_000, max_open_sessions=3)


@pytest.fixture
def registry(settings: Settings) -> SessionRegistry:
    return SessionRegistry(LocalBackend(settings.data_dir), settings)


class Writer:
    """A Write stream without gRPC: its queue, and its commit loop's acks."""

    def __init__(self, registry: SessionRegistry, stream: Stream) -> None:
        self.stream = stream
        self.acks: AsyncIterator[Ack] = commit_loop(registry, stream)

    async def send(self, offset: int, data: bytes, finish: bool = False) -> Ack:
        await self.stream.lease.queue.put(Append(offset, data, finish))
        return await anext(self.acks)


async def open_writer(
    registry: SessionRegistry, sid: str, obj: str = "video", generation: int = 0
) -> Writer:
    queue = WriteQueue(QUEUE_BYTES)
    opening = Opening(sid, obj, "video/webm", 1.0, compile_generation=generation)
    return Writer(registry, await registry.open_stream(opening, queue))


async def test_create_refuses_a_used_id_and_too_many_recordings(
    registry: SessionRegistry,
) -> None:
    await registry.create("session-0001")
    with pytest.raises(errors.AlreadyExists):
        await registry.create("session-0001")
    with pytest.raises(errors.InvalidArgument):
        await registry.create("../etc/passwd")
    await registry.create()
    await registry.create()
    with pytest.raises(errors.TooManySessions) as many:
        await registry.create()
    assert many.value.reason == "too-many-open-sessions"


async def test_a_track_is_written_finished_and_survives_a_restart(
    registry: SessionRegistry, settings: Settings
) -> None:
    sid = (await registry.create()).id
    writer = await open_writer(registry, sid)
    assert writer.stream.sink.size == 0
    assert await writer.send(0, b"abc") == Ack(3)
    assert await writer.send(3, b"de", finish=True) == Ack(5, finished=True)
    registry.close_stream(writer.stream)
    assert registry.get(sid).state == State.RECORDED
    assert registry.write_status(sid, "video") == (5, True)
    restarted = SessionRegistry(LocalBackend(settings.data_dir), settings)
    assert restarted.get(sid).tracks["video"].finished
    assert restarted.track_sizes(restarted.get(sid)) == {"video": 5}
    assert restarted.read_range(sid, "video", 1, 0) == (1, 4)
    with pytest.raises(errors.OutOfRange):
        restarted.read_range(sid, "video", 6, 0)


async def test_a_wrong_offset_and_an_oversized_session_are_refused(
    registry: SessionRegistry,
) -> None:
    sid = (await registry.create()).id
    writer = await open_writer(registry, sid)
    with pytest.raises(errors.OutOfRange, match="write_offset 7"):
        await writer.send(7, b"x")
    registry.close_stream(writer.stream)
    writer = await open_writer(registry, sid)
    with pytest.raises(errors.SessionTooLarge):
        await writer.send(0, b"x" * 10_001)
    registry.close_stream(writer.stream)


async def test_a_newer_writer_supersedes_the_older_one(registry: SessionRegistry) -> None:
    sid = (await registry.create()).id
    old = await open_writer(registry, sid)
    await old.send(0, b"abc")
    new = await open_writer(registry, sid)
    assert new.stream.sink.size == 3
    assert registry.writing(sid) == ["video"]
    with pytest.raises(errors.Superseded):
        await anext(old.acks)
    registry.close_stream(old.stream)
    assert registry.writing(sid) == ["video"], "the old stream's close freed the new lease"
    registry.close_stream(new.stream)
    assert registry.writing(sid) == []


async def test_a_delete_stops_its_writers_and_forgets_the_session(
    registry: SessionRegistry, settings: Settings
) -> None:
    sid = (await registry.create()).id
    writer = await open_writer(registry, sid)
    await writer.send(0, b"abc")
    await registry.delete(sid)
    with pytest.raises(errors.NotFound):
        await anext(writer.acks)
    registry.close_stream(writer.stream)
    with pytest.raises(errors.NotFound):
        registry.get(sid)
    with pytest.raises(errors.NotFound):
        await registry.update(sid, Change(progress=1))
    assert not (settings.data_dir / sid).exists()


async def test_only_the_newest_compile_writes_and_publishes_the_output(
    registry: SessionRegistry,
) -> None:
    sid = (await registry.create()).id
    await registry.update(sid, Change(finish_tracks=True))
    with pytest.raises(errors.Conflict):
        await open_writer(registry, sid, "output", 0)  # not compiling
    first = (await registry.update(sid, Change(begin_compile=True))).compile_generation
    late = await open_writer(registry, sid, "output", first)
    second = (await registry.update(sid, Change(begin_compile=True))).compile_generation
    with pytest.raises(errors.Conflict, match=f"compile {first} refused"):
        await late.send(0, b"old mp4")
    registry.close_stream(late.stream)
    writer = await open_writer(registry, sid, "output", second)
    assert await writer.send(0, b"new mp4", finish=True) == Ack(7, finished=True)
    registry.close_stream(writer.stream)
    output = registry.get(sid).output
    assert output is not None and output.size == 7 and output.etag
    assert b"".join(registry.read(sid, "output", 0, 0)) == b"new mp4"


async def test_tracks_cannot_reopen_once_a_compile_was_asked_for(
    registry: SessionRegistry,
) -> None:
    sid = (await registry.create()).id
    await registry.update(sid, Change(state=State.QUEUED))
    with pytest.raises(errors.Conflict, match="not recording"):
        await open_writer(registry, sid)
    assert registry.writing(sid) == []


# --- titles and named outputs (issue 19) -------------------------------------------------------


async def test_titles_are_set_at_creation_changed_and_searched(registry: SessionRegistry) -> None:
    named = await registry.create(title="  Réunion   d'équipe ")
    assert named.title == "Réunion d'équipe"
    plain = await registry.create()
    assert plain.title == ""  # the default (its creation time) is computed, never stored
    with pytest.raises(errors.InvalidArgument, match="control"):
        await registry.create(title="bell\x07")
    with pytest.raises(errors.InvalidArgument, match="at most 200"):
        await registry.update(plain.id, Change(title="x" * 201))
    await registry.update(plain.id, Change(title="Weekly sync"))
    assert registry.get(plain.id).title == "Weekly sync"

    def found(query: str) -> set[str]:
        return {r.id for r in registry.page(0, "", frozenset(), query)[0]}

    assert found("RÉUNION") == {named.id}
    assert found("weekly") == {plain.id}
    assert found(plain.id[:8]) == {plain.id}
    assert found("Recording") == set()  # both are named now
    assert found("") == {named.id, plain.id}


async def test_named_outputs_are_fenced_by_the_compile_generation(
    registry: SessionRegistry,
) -> None:
    sid = (await registry.create()).id
    await registry.update(sid, Change(finish_tracks=True))
    first = (await registry.update(sid, Change(begin_compile=True))).compile_generation
    poster = await open_writer(registry, sid, "poster.jpg", first)
    assert await poster.send(0, b"jpeg", finish=True) == Ack(4, finished=True)
    registry.close_stream(poster.stream)
    assert registry.get(sid).named_outputs["poster.jpg"].size == 4
    assert b"".join(registry.read(sid, "poster.jpg", 0, 0)) == b"jpeg"
    assert registry.read_range(sid, "poster.jpg", 0, 0) == (0, 4)

    late = await open_writer(registry, sid, "hls-00000.m4s", first)
    second = (await registry.update(sid, Change(begin_compile=True))).compile_generation
    assert registry.get(sid).named_outputs == {}  # an earlier attempt's outputs are void
    with pytest.raises(errors.Conflict, match=f"compile {first} refused"):
        await late.send(0, b"stale segment")
    registry.close_stream(late.stream)
    with pytest.raises(errors.NotFound):
        registry.read_range(sid, "poster.jpg", 0, 0)
    for bad in ("../poster.jpg", "poster.exe", "session.json"):
        with pytest.raises(errors.InvalidArgument):
            await open_writer(registry, sid, bad, second)
    fresh = await open_writer(registry, sid, "poster.jpg", second)
    await fresh.send(0, b"new", finish=True)
    registry.close_stream(fresh.stream)
    assert registry.get(sid).named_outputs["poster.jpg"].size == 3


@pytest.mark.parametrize("state", [State.RECORDING, State.RECORDED, State.QUEUED])
def test_the_next_compiles_output_may_be_written_ahead_but_not_published(state: State) -> None:
    ahead = record(state, generation=2)
    check_output(ahead, 3)  # the generation the next begin_compile gives
    for generation in (2, 4):
        with pytest.raises(errors.Conflict):
            check_output(ahead, generation)
    with pytest.raises(errors.Conflict):
        check_output(ahead, 3, publish=True)


@pytest.mark.parametrize("state", [State.READY, State.FAILED, State.EXPIRED])
def test_no_output_is_written_ahead_of_a_settled_session(state: State) -> None:
    with pytest.raises(errors.Conflict):
        check_output(record(state, generation=2), 3)


def test_the_compile_that_made_a_session_ready_adds_its_named_outputs() -> None:
    """`ready` comes with the MP4; the poster, storyboard and HLS follow from the same
    compile (docs/decisions.md, "Ready first"). The MP4 itself is never replaced."""
    ready = record(State.READY, generation=3)
    for name in ("poster.jpg", "storyboard.vtt", "hls-00000.m4s", "hls.m3u8"):
        check_output(ready, 3, name=name)
        check_output(ready, 3, publish=True, name=name)
    for publish in (False, True):
        with pytest.raises(errors.Conflict):
            check_output(ready, 3, publish=publish)  # the MP4
        with pytest.raises(errors.Conflict):
            check_output(ready, 2, publish=publish, name="poster.jpg")  # an older compile
        with pytest.raises(errors.Conflict):
            check_output(ready, 4, publish=publish, name="poster.jpg")
    for state in (State.FAILED, State.EXPIRED, State.RECORDED, State.QUEUED):
        with pytest.raises(errors.Conflict):
            check_output(record(state, generation=3), 3, publish=True, name="poster.jpg")


def test_the_compile_that_began_writes_and_publishes_its_output() -> None:
    compiling = record(State.COMPILING, generation=3)
    check_output(compiling, 3)
    check_output(compiling, 3, publish=True)
    with pytest.raises(errors.Conflict):
        check_output(compiling, 4)  # not ahead of a running compile
