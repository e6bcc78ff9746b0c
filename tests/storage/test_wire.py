"""The hand-encoded `WriteRequest` of a Write stream's appends (storage/wire.py) is exactly
what protobuf would send, so storage parses it as before."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tapedeck._proto import storage_pb2 as pb
from tapedeck.storage.wire import encode_append, serialize_write


@given(
    offset=st.integers(min_value=0, max_value=2**63 - 1),
    data=st.binary(max_size=3000),
    finish=st.booleans(),
)
def test_an_append_is_protobufs_own_encoding(offset: int, data: bytes, finish: bool) -> None:
    wire = encode_append(offset, data, finish)
    expected = pb.WriteRequest(write_offset=offset, data=data, finish_write=finish)
    assert wire == expected.SerializeToString()
    parsed = pb.WriteRequest.FromString(wire)
    assert (parsed.write_offset, parsed.data, parsed.finish_write) == (offset, data, finish)


def test_a_big_frame_round_trips() -> None:
    data = bytes(range(256)) * 1221  # 312576 B: a 2.5 Mbit/s second, a 3-byte length
    parsed = pb.WriteRequest.FromString(encode_append(5 * 312_500, data))
    assert parsed.data == data and parsed.write_offset == 5 * 312_500


def test_the_first_message_is_serialized_by_protobuf() -> None:
    first = pb.WriteRequest(session_id="abcdefgh", object="video", mime_type="video/webm")
    assert serialize_write(first) == first.SerializeToString()
    assert serialize_write(b"\x28\x01") == b"\x28\x01"
