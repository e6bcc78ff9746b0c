"""The ingest protocol state machine, without sockets."""

from __future__ import annotations

import pytest

from tapedeck.ingest.protocol import (
    Close,
    FinishMessage,
    Phase,
    ProtocolError,
    StartMessage,
    TrackStream,
    parse_client_message,
)


def test_happy_path() -> None:
    stream = TrackStream(max_frame_bytes=100)
    start = stream.on_text('{"type":"start","mimeType":"video/webm","startedAt":1.5}')
    assert isinstance(start, StartMessage) and start.startedAt == 1.5
    stream.on_ready(committed=40)
    assert stream.on_frame(10) == 40 and stream.on_frame(5) == 50
    assert stream.inflight == 15
    assert stream.on_ack(50) and not stream.on_ack(45) and stream.committed == 50
    assert isinstance(stream.on_text('{"type":"finish"}'), FinishMessage)
    assert stream.phase == Phase.FINISHING


@pytest.mark.parametrize(
    ("text", "close", "code"),
    [
        ("{not json", Close.BAD_MESSAGE, "malformed-json"),
        ("[1,2]", Close.BAD_MESSAGE, "bad-message"),
        ('{"type":"dance"}', Close.BAD_MESSAGE, "unknown-type"),
        ('{"type":"start"}', Close.BAD_MESSAGE, "bad-message"),
        ('{"type":"start","mimeType":"","startedAt":1}', Close.BAD_MESSAGE, "bad-message"),
        ('{"type":"start","mimeType":"v","startedAt":"soon"}', Close.BAD_MESSAGE, "bad-message"),
        ('{"type":"start","mimeType":"v","startedAt":-5}', Close.BAD_MESSAGE, "bad-message"),
        (
            '{"type":"start","mimeType":"' + "v" * 5000 + '","startedAt":1}',
            Close.TOO_LARGE,
            "message-too-large",
        ),
    ],
)
def test_bad_messages(text: str, close: Close, code: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_client_message(text)
    assert (err.value.close, err.value.code) == (close, code)
    assert err.value.message


T0 = 1_760_000_000_000.0  # epoch ms, as a browser sends it


@pytest.mark.parametrize(
    "started_at", ["1e15", "7258118400001", "1e300", "NaN", "Infinity", "-Infinity"]
)
def test_a_start_no_browser_clock_can_give_is_refused(started_at: str) -> None:
    # 1e15 ms is the year 33658; years of offset between tracks became years of silence.
    with pytest.raises(ProtocolError) as err:
        parse_client_message(f'{{"type":"start","mimeType":"v","startedAt":{started_at}}}')
    assert (err.value.close, err.value.code) == (Close.BAD_MESSAGE, "bad-message")
    assert err.value.message.startswith("startedAt: ")


@pytest.mark.parametrize("started_at", [0, 1.5, T0, 7_258_118_400_000])
def test_unknown_and_plausible_starts_are_accepted(started_at: float) -> None:
    start = parse_client_message(f'{{"type":"start","mimeType":"v","startedAt":{started_at!r}}}')
    assert isinstance(start, StartMessage) and start.startedAt == started_at


def test_order_is_enforced() -> None:
    stream = TrackStream(max_frame_bytes=100)
    with pytest.raises(ProtocolError) as binary_first:
        stream.on_frame(10)
    assert binary_first.value.code == "binary-before-start"
    with pytest.raises(ProtocolError) as finish_first:
        stream.on_text('{"type":"finish"}')
    assert finish_first.value.code == "unexpected-finish"
    stream.on_text('{"type":"start","mimeType":"v","startedAt":1}')
    stream.on_ready(0)
    with pytest.raises(ProtocolError) as twice:
        stream.on_text('{"type":"start","mimeType":"v","startedAt":1}')
    assert twice.value.code == "unexpected-start"
    with pytest.raises(ProtocolError) as big:
        stream.on_frame(101)
    assert big.value.close == Close.TOO_LARGE
    stream.on_text('{"type":"finish"}')
    with pytest.raises(ProtocolError) as after:
        stream.on_frame(1)
    assert after.value.close == Close.CONFLICT


def test_silence_is_idle_only_when_nothing_is_owed() -> None:
    """A silent client is idle unless it is waiting for acks storage has not given yet; a
    client that does not read the acks we try to send it is idle all the same."""
    stream = TrackStream(max_frame_bytes=100)
    stream.on_text('{"type":"start","mimeType":"video/webm","startedAt":1}')
    assert not stream.silence_is_idle(acks_stuck=False)  # not streaming yet
    stream.on_ready(committed=0)
    assert stream.silence_is_idle(acks_stuck=False)  # start, then nothing
    stream.on_frame(10)
    assert not stream.silence_is_idle(acks_stuck=False)  # waiting for storage
    assert stream.silence_is_idle(acks_stuck=True)  # we wait for it to read
    stream.on_ack(10)
    assert stream.silence_is_idle(acks_stuck=False)
    stream.on_text('{"type":"finish"}')
    assert not stream.silence_is_idle(acks_stuck=False)  # finishing: nothing to read
