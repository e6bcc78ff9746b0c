"""The power-cut checker (model.py) flags each kind of loss, and only losses: no servers."""

from __future__ import annotations

from powercut.model import (
    DiskView,
    Observed,
    ObservedOutput,
    ObservedTrack,
    SessionFacts,
    TrackFacts,
    Upload,
    check,
    etag,
)

MEDIA = bytes(range(256)) * 40
SID = "0f0e0d0c-aaaa-bbbb-cccc-000000000001"


def facts(**changes: object) -> dict[str, SessionFacts]:
    session = SessionFacts(id=SID, tracks={"video": TrackFacts(MEDIA, acked=5000)}, created=True)
    for name, value in changes.items():
        setattr(session, name, value)
    return {SID: session}


def seen(
    size: int = 5000,
    data: bytes | None = None,
    finished: bool = False,
    state: str = "recording",
    output: ObservedOutput | None = None,
    generation: int = 0,
) -> dict[str, Observed]:
    track = ObservedTrack(size, finished, MEDIA[:size] if data is None else data)
    return {SID: Observed(state, generation, {"video": track}, output)}


DISK = DiskView({SID: True}, [])


def test_everything_acknowledged_is_there() -> None:
    result = check(facts(), seen(size=6000), DISK)  # more than acked: unacked bytes, in order
    assert result.violations == []
    assert (result.sessions, result.acked_bytes, result.lost_bytes) == (1, 5000, 0)


def test_acknowledged_bytes_lost() -> None:
    result = check(facts(), seen(size=4000), DISK)
    assert result.lost_bytes == 1000
    assert result.violations == [
        f"session {SID} video: 4000 bytes durable, 5000 acknowledged (1000 acknowledged bytes lost)"
    ]


def test_bytes_out_of_order() -> None:
    data = bytearray(MEDIA[:5000])
    data[1234] ^= 0xFF
    result = check(facts(), seen(data=bytes(data)), DISK)
    assert result.violations == [
        f"session {SID} video: bytes differ from what was sent at offset 1234"
    ]
    assert result.lost_bytes == 5000 - 1234


def test_a_track_or_a_session_gone() -> None:
    gone_track = {SID: Observed("recording", 0, {}, None)}
    assert check(facts(), gone_track, DISK).lost_bytes == 5000
    result = check(facts(), {}, DiskView({}, []))
    assert result.violations == [f"session {SID}: created (acknowledged) but missing"]
    assert result.lost_bytes == 5000


def test_a_delete_in_doubt_may_go_either_way_an_answered_one_may_not() -> None:
    assert check(facts(delete_tried=True), {}, DiskView({}, [])).violations == []
    assert check(facts(delete_tried=True), seen(), DISK).violations == []
    result = check(facts(delete_tried=True, deleted=True), seen(), DISK)
    assert result.violations == [f"session {SID}: deleted (acknowledged) but listed again"]


def test_finished_and_finalized_stay_so() -> None:
    session = facts(queued=True)
    session[SID].tracks["video"].finished = True
    assert check(session, seen(finished=True, state="queued"), DISK).violations == []
    assert set(check(session, seen(state="recording"), DISK).violations) == {
        f"session {SID} video: finished (acknowledged) but no longer finished",
        f"session {SID}: finalized (acknowledged) but recording again",
    }


def test_manifests_and_leftovers() -> None:
    disk = DiskView({SID: True, "other-session-dir": False}, [".deleted-x"])
    assert check(facts(), seen(), disk).violations == [
        "other-session-dir/session.json does not load",
        ".deleted-x left over after start",
    ]
    unlisted = DiskView({SID: True, "1111aaaa-0000": True}, [])
    assert check(facts(), seen(), unlisted).violations == [
        "1111aaaa-0000/session.json loads but storage does not list 1111aaaa-0000"
    ]
    listed = {**seen(), ".session.json.ab.tmp": Observed("recording", 0, {}, None)}
    assert (
        "'.session.json.ab.tmp' is listed as a session" in check(facts(), listed, DISK).violations
    )


def test_published_outputs() -> None:
    old, new = Upload(1, b"a" * 300), Upload(2, b"b" * 500)
    published = facts(uploads=[old, new], output=new, generation=2, ready=True)
    whole = ObservedOutput(500, etag(new.data), new.data)
    assert check(published, seen(output=whole, state="ready", generation=2), DISK).violations == []
    # the manifest of compile 1 over the file of compile 2: what a publish whose manifest
    # save was lost leaves
    torn = ObservedOutput(300, etag(old.data), new.data[:300])
    problems = check(published, seen(output=torn, state="ready", generation=2), DISK).violations
    assert f"session {SID} output: its bytes do not match its etag {etag(old.data)}" in problems
    stale = ObservedOutput(300, etag(old.data), old.data)
    problems = check(published, seen(output=stale, state="ready", generation=2), DISK).violations
    assert problems == [f"session {SID} output: an older compile's bytes replaced compile 2's"]
    published[SID].ready = False
    published[SID].recompiling = True  # a newer compile began: it voids the output
    assert check(published, seen(state="compiling", generation=2), DISK).violations == []
    published[SID].ready, published[SID].recompiling = True, False
    problems = check(published, seen(state="compiling", generation=1), DISK).violations
    assert set(problems) == {
        f"session {SID}: ready (acknowledged) but compiling",
        f"session {SID}: compile generation 1, but 2 was acknowledged",
        f"session {SID} output: gone, yet compile 2 published it",
    }
