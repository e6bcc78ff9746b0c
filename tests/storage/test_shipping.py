"""The S3 tier's planning (storage/shipping.py), without a server: equal parts, the last one
smaller, one PUT for a short track, completion, the volume's bounded tail, where reads come from."""

from __future__ import annotations

import pytest

from tapedeck.storage import shipping
from tapedeck.storage.shipping import (
    Complete,
    CreateUpload,
    FromBucket,
    FromVolume,
    Idle,
    PutWhole,
    Shipped,
    ShippedPart,
    UploadPart,
    UploadState,
    plan,
    punch_to,
    read_source,
    wake_at,
)

P = 100


def run(state: UploadState, durable: int, finished: bool) -> list[object]:
    """Apply the plan as the tier would, with every store call succeeding."""
    steps: list[object] = []
    while True:
        action = plan(state, durable, finished)
        steps.append(action)
        if isinstance(action, Idle):
            return steps
        if isinstance(action, CreateUpload):
            state.upload_id = "u1"
        elif isinstance(action, UploadPart):
            assert action.offset == state.shipped
            state.parts.append(ShippedPart(number=action.number, etag="e", size=action.length))
        elif isinstance(action, PutWhole):
            state.completed, state.size = True, action.length
        elif isinstance(action, Complete):
            state.completed, state.size = True, state.shipped


def test_a_live_track_ships_only_whole_equal_parts() -> None:
    state = UploadState(part_size=P)
    assert run(state, 99, finished=False) == [Idle()]
    assert run(state, 250, finished=False) == [
        CreateUpload(),
        UploadPart(1, 0, P),
        UploadPart(2, P, P),
        Idle(),
    ]
    assert state.shipped == 200 and not state.completed


def test_finishing_sends_the_short_last_part_and_completes() -> None:
    state = UploadState(part_size=P)
    run(state, 250, finished=False)
    assert run(state, 250, finished=True) == [UploadPart(3, 200, 50), Complete(), Idle()]
    assert state.completed and state.size == 250
    assert [p.size for p in state.parts] == [P, P, 50]


def test_a_track_that_ends_on_a_part_boundary_completes_without_an_empty_part() -> None:
    state = UploadState(part_size=P)
    run(state, 2 * P, finished=False)
    assert run(state, 2 * P, finished=True) == [Complete(), Idle()]


@pytest.mark.parametrize("size", [0, 1, P])
def test_a_short_track_is_one_put(size: int) -> None:
    state = UploadState(part_size=P)
    assert run(state, size, finished=True) == [PutWhole(size), Idle()]
    assert state.completed and state.size == size


def test_a_restart_continues_the_same_upload_from_the_saved_parts() -> None:
    saved = UploadState(part_size=P)
    run(saved, 230, finished=False)
    restarted = UploadState.model_validate_json(saved.model_dump_json())
    assert plan(restarted, 330, finished=False) == UploadPart(3, 200, P)
    assert restarted.upload_id == "u1"


def test_a_durable_size_below_what_was_shipped_is_an_error() -> None:
    state = UploadState(part_size=P)
    run(state, 200, finished=False)
    with pytest.raises(ValueError):
        plan(state, 150, finished=False)


def test_too_many_parts_is_an_error_not_a_refused_upload() -> None:
    state = UploadState(
        part_size=P,
        upload_id="u",
        parts=[ShippedPart(number=n, etag="e", size=P) for n in range(1, shipping.MAX_PARTS + 1)],
    )
    with pytest.raises(ValueError, match="part size"):
        plan(state, (shipping.MAX_PARTS + 1) * P, finished=False)


def test_the_volume_keeps_a_bounded_tail() -> None:
    state = UploadState(part_size=8192)
    run(state, 5 * 8192 + 10, finished=False)
    assert punch_to(state, keep=2 * 8192) == 3 * 8192
    assert punch_to(state, keep=5000) == 5 * 8192 - 8192  # whole pages below shipped - keep
    state.punched = 3 * 8192
    assert punch_to(state, keep=10 * 8192) == 3 * 8192, "never un-punches"
    run(state, 5 * 8192 + 10, finished=True)
    assert punch_to(state, keep=10 * 8192) == 5 * 8192 + 10, "complete: all of it goes"


def test_reads_come_from_the_volume_until_the_object_is_complete() -> None:
    assert read_source(None, 0) == FromVolume()
    state = UploadState(part_size=P, upload_id="u", punched=4096)
    assert read_source(state, 4096) == FromVolume()
    assert read_source(state, 4095) == Shipped()
    state.completed = True
    assert read_source(state, 0) == FromBucket()


def test_wake_at_is_the_next_whole_part_and_never_once_completed() -> None:
    state = UploadState(part_size=100)
    assert wake_at(state) == 100
    state.parts.append(ShippedPart(number=1, etag="a", size=100))
    assert wake_at(state) == 200
    assert not isinstance(plan(state, 199, finished=False), UploadPart | CreateUpload)
    assert isinstance(plan(state, wake_at(state) or 0, finished=False), UploadPart | CreateUpload)
    assert wake_at(state.model_copy(update={"completed": True})) is None


# --- outputs shipped as they grow -----------------------------------------------------------


def box(kind: bytes, size: int) -> bytes:
    return size.to_bytes(4, "big") + kind


def walk(data: bytes) -> shipping.BoxStep:
    """The tier's walk over committed bytes, to its end."""
    offset = 0
    while True:
        step = shipping.next_box(offset, data[offset : offset + 16])
        if not isinstance(step, shipping.NextBox):
            return step
        offset = step.offset


def test_the_head_of_a_live_mux_ends_past_the_media_box_header() -> None:
    """FFmpeg's `-moov_size` file: ftyp, the reserve (a free box), the 8-byte placeholder
    that becomes a 64-bit size, then mdat; the head is all of it up to mdat's 16 bytes."""
    ftyp = box(b"ftyp", 24) + b"isom" + bytes(12)
    reserve = box(b"free", 1000) + bytes(992)
    mp4 = ftyp + reserve + box(b"free", 8) + box(b"mdat", 0) + b"media" * 10
    mdat_at = len(ftyp) + len(reserve) + 8
    assert walk(mp4) == shipping.HeadEnds(mdat_at + 16)
    assert walk(mp4[: mdat_at + 4]) == shipping.NeedBytes(), "mdat's header not committed"
    assert walk(mp4[:30]) == shipping.NeedBytes(), "the reserve not committed"


def test_a_64_bit_box_size_is_followed() -> None:
    big = (1).to_bytes(4, "big") + b"free" + (40).to_bytes(8, "big") + bytes(24)
    assert walk(big + box(b"mdat", 8)) == shipping.HeadEnds(40 + 16)
    assert walk(big[:12]) == shipping.NeedBytes()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(20),  # a JPEG poster
        b"#EXTM3U\n#EXT-X-VERSION:7\n",  # a playlist: "M3U\\n" is no box type
        box(b"free", 0) + bytes(8),  # "to the end": nothing after it
        box(b"free", 3) + bytes(8),  # damaged
    ],
)
def test_what_is_not_an_mp4_head_is_recognised(data: bytes) -> None:
    assert walk(data) == shipping.NotMp4()


def test_the_head_window_is_whole_parts_and_at_least_part_one() -> None:
    assert shipping.head_window(None, P) == P
    assert shipping.head_window(1, P) == P
    assert shipping.head_window(P, P) == P
    assert shipping.head_window(P + 1, P) == 2 * P
    assert shipping.head_window(250, P) == 3 * P


def test_parts_of_a_region() -> None:
    assert list(shipping.parts_of(0, 1, P)) == [1]
    assert list(shipping.parts_of(0, P, P)) == [1]
    assert list(shipping.parts_of(P - 1, P + 1, P)) == [1, 2]
    assert list(shipping.parts_of(250, 301, P)) == [3, 4]
    assert list(shipping.parts_of(5, 5, P)) == []


def test_a_rewrite_is_refused_only_where_its_parts_were_trimmed() -> None:
    trimmed = (P, 3 * P)  # parts 2 and 3 shipped and punched; part 1 kept (the head)
    assert not shipping.rewrite_reaches_trimmed(0, 50, 500, P, trimmed)
    assert not shipping.rewrite_reaches_trimmed(0, P, 500, P, trimmed)
    assert shipping.rewrite_reaches_trimmed(0, P + 1, 500, P, trimmed)
    assert shipping.rewrite_reaches_trimmed(250, 260, 500, P, trimmed)
    assert not shipping.rewrite_reaches_trimmed(310, 320, 500, P, trimmed), "not shipped yet"
    assert not shipping.rewrite_reaches_trimmed(0, 50, 500, P, (P, P)), "nothing trimmed"
