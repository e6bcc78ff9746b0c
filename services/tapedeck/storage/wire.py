"""A Write stream's appends on the wire, encoded by hand: the frame is copied once.

Through protobuf an ingest frame is copied twice in Python before gRPC copies it again: into
the message (`WriteRequest(data=...)`) and into its serialization. Under a reconnect storm
those copies land in freshly faulted memory (docs/performance.md). An append has three fields,
so its encoding is a few header bytes, the frame, and one trailing byte: `b"".join` makes the
only copy. The bytes are exactly protobuf's (tests/storage/test_wire.py), so storage is
unchanged.
"""

from __future__ import annotations

from tapedeck._proto import storage_pb2 as pb

# Tags of WriteRequest's fields (proto/tapedeck/v1/storage.proto): field number << 3 | type.
_WRITE_OFFSET = bytes([5 << 3 | 0])  # int64, varint
_DATA = bytes([6 << 3 | 2])  # bytes, length-delimited
_FINISH = bytes([7 << 3 | 0, 1])  # bool true, varint


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: negatives are ten bytes of two's complement
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_append(offset: int, data: bytes, finish: bool = False) -> bytes:
    """`WriteRequest(write_offset=offset, data=data, finish_write=finish)` serialized."""
    head = b""
    if offset:
        head = _WRITE_OFFSET + _varint(offset)
    if data:
        head += _DATA + _varint(len(data))
    return b"".join((head, data, _FINISH if finish else b""))


def serialize_write(message: pb.WriteRequest | bytes) -> bytes:
    """The Write call's request serializer: appends arrive encoded, the first message not."""
    if isinstance(message, bytes):
        return message
    return message.SerializeToString()
