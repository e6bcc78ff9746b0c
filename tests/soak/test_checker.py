"""The checker's comparisons, on made-up facts: each kind of damage is caught and named."""

from __future__ import annotations

import os

from soak.checker import (
    check_track,
    common_prefix,
    compare_packets,
    descriptors,
    explained,
    leftovers,
    split_known,
)

SENT = os.urandom(10_000)


def test_common_prefix() -> None:
    assert common_prefix(b"abcdef", b"abcxyz") == 3
    assert common_prefix(b"abc", b"abc") == 3
    assert common_prefix(b"", b"abc") == 0
    assert common_prefix(SENT, SENT[:7777] + b"x") == 7777


def test_a_finished_track_stored_whole_is_clean() -> None:
    verdict = check_track("t", SENT, [1000, 5000, 10_000], True, SENT)
    assert verdict.violations == [] and verdict.acknowledged == 10_000 and verdict.lost == 0


def test_unacknowledged_tail_may_be_missing_or_present() -> None:
    assert check_track("t", SENT, [4000], False, SENT[:4000]).violations == []
    assert check_track("t", SENT, [4000], False, SENT[:6000]).violations == []


def test_acknowledged_bytes_missing_are_lost() -> None:
    verdict = check_track("t", SENT, [4000, 8000], False, SENT[:5000])
    assert verdict.lost == 3000
    assert "3000 acknowledged bytes lost" in verdict.violations[0]


def test_acknowledged_bytes_changed_are_lost_and_named() -> None:
    stored = SENT[:100] + bytes([SENT[100] ^ 1]) + SENT[101:8000]
    verdict = check_track("t", SENT, [8000], False, stored)
    assert verdict.lost == 7900
    assert any("differ from what was sent at offset 100" in v for v in verdict.violations)


def test_bytes_never_sent_are_caught_even_beyond_the_last_ack() -> None:
    verdict = check_track("t", SENT, [1000], False, SENT[:2000] + b"junk")
    assert verdict.lost == 0
    assert any("differ" in v for v in verdict.violations)


def test_an_ack_that_goes_back_is_caught() -> None:
    verdict = check_track("t", SENT, [5000, 3000], False, SENT[:5000])
    assert any("ack went back from 5000 to 3000" in v for v in verdict.violations)


def test_a_finished_upload_not_stored_whole_is_caught() -> None:
    verdict = check_track("t", SENT, [], True, SENT[:9000])
    assert verdict.acknowledged == 10_000 and verdict.lost == 1000
    assert any("upload finished but 9000 of 10000" in v for v in verdict.violations)


def test_packets() -> None:
    same = {"video": [b"a", b"b"], "audio": [b"c"]}
    assert compare_packets("s", same, dict(same)) == []
    [problem] = compare_packets("s", same, {"video": [b"a", b"x"], "audio": [b"c"]})
    assert "video packets differ" in problem and "first difference at packet 1" in problem
    [short] = compare_packets("s", same, {"video": [b"a", b"b"], "audio": []})
    assert "audio" in short and "0 vs 1 expected" in short


def test_leftovers() -> None:
    data = [
        "s1/session.json",
        "s1/video.webm",
        "s1/.s1.mp4.partial",
        "s2/.session.json.ab12.tmp",
        ".deleted-s3",
        ".deleted-s3/video.webm",
        ".tapedeck-secret",
    ]
    scratch = ["tapedeck-s1-abc_12", "tapedeck-scratch-0", "tapedeck-scratch-0/s2.4242"]
    found = leftovers(data, scratch)
    assert found == [
        "leftover in the data directory: .deleted-s3",
        "leftover in the data directory: .deleted-s3/video.webm",
        "leftover in the data directory: s1/.s1.mp4.partial",
        "leftover in the data directory: s2/.session.json.ab12.tmp",
        "scratch of a dead compile: tapedeck-s1-abc_12",
        "scratch of a dead compile: tapedeck-scratch-0/s2.4242",
    ]
    assert leftovers(["s1/session.json", "s1/s1.mp4"], ["tapedeck-scratch-0"]) == []


def test_known_defects_are_set_apart_only_when_named() -> None:
    found = ["scratch of a dead compile: tapedeck-s1-x", "s1 video: 5 acknowledged bytes lost"]
    assert split_known(found, []) == (found, [])
    assert split_known(found, ["scratch"]) == ([found[1]], [found[0]])
    taken = "s2 audio: upload rejected: closed 4409: a newer connection took over this track"
    assert split_known([taken], ["superseded"]) == ([], [taken])
    finished = "s3 video: upload rejected: closed 4409: video track of s3 is finished"
    assert split_known([finished], ["superseded", "scratch"]) == ([finished], [])


def test_descriptors() -> None:
    assert descriptors(20, 18, []) == []
    assert descriptors(20, 20, []) == []
    assert "holds 23 descriptors (idle: 20)" in descriptors(20, 23, [])[0]
    assert "/mnt/s1/video.webm" in descriptors(20, 20, ["/mnt/s1/video.webm"])[0]


def test_only_a_full_disk_explains_a_failed_compile() -> None:
    assert explained("storage is full: no space left on the volume", disk_was_full=True)
    assert not explained("storage is full: no space left on the volume", disk_was_full=False)
    assert not explained("ffmpeg exited 1: Invalid data found", disk_was_full=True)
