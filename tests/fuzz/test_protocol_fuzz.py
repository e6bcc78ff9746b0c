"""Property-based fuzzing of the ingest protocol's parser and state machine (hypothesis)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from tapedeck.ingest.protocol import (
    Close,
    ProtocolError,
    TrackStream,
    parse_client_message,
)

CASES = 1500

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.one_of(
    st.text(max_size=200),  # arbitrary text, mostly not JSON
    json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["start", "finish", "ack", "", "START"])},
        optional={"mimeType": json_values, "startedAt": json_values, "extra": json_values},
    ).map(json.dumps),
)


@settings(max_examples=CASES, deadline=None)
@given(messages)
def test_parser_only_raises_protocol_errors(text: str) -> None:
    try:
        parsed = parse_client_message(text)
    except ProtocolError as err:
        assert err.close in (Close.BAD_MESSAGE, Close.TOO_LARGE)
        assert err.code and err.message
    else:
        assert parsed.type in ("start", "finish")


events = st.lists(
    st.one_of(
        st.tuples(st.just("text"), messages),
        st.tuples(st.just("frame"), st.integers(min_value=0, max_value=300)),
        st.tuples(st.just("ready"), st.integers(min_value=0, max_value=1000)),
        st.tuples(st.just("ack"), st.integers(min_value=0, max_value=5000)),
    ),
    max_size=40,
)


@settings(max_examples=CASES, deadline=None)
@given(events)
def test_state_machine_invariants(sequence: list[tuple[str, object]]) -> None:
    """Whatever arrives, in whatever order: only ProtocolErrors, offsets only grow, the
    acknowledged size never decreases, and bytes are accepted only while streaming."""
    stream = TrackStream(max_frame_bytes=200)
    for kind, value in sequence:
        offset, committed = stream.offset, stream.committed
        try:
            if kind == "text":
                stream.on_text(str(value))
            elif kind == "frame":
                assert isinstance(value, int)
                at = stream.on_frame(value)
                assert at == offset and stream.offset == offset + value and 0 < value <= 200
            elif kind == "ready" and stream.phase.value == "opening":
                assert isinstance(value, int)
                stream.on_ready(value)
            elif kind == "ack":
                assert isinstance(value, int)
                stream.on_ack(value)
                assert stream.committed == max(committed, value)
        except ProtocolError as err:
            assert err.message
            return  # the connection ends here
        assert stream.offset >= offset and stream.committed >= committed
