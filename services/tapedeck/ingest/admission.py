"""Whether ingest takes a new socket, and when a drained one may close: pure rules, no I/O.

A replica that is draining (SIGTERM) refuses new sockets with 1012, the same code its open
sockets get when they close: the process is going away, so the client should reconnect at once
and the Service sends it to another replica. A replica at `TAPEDECK_INGEST_MAX_STREAMS`
refuses with 1013 (try again later): it is not going away, it is busy, so the client backs off
with jitter and, through the Service, usually lands on a replica with room.
"""

from __future__ import annotations

from tapedeck.ingest.protocol import Close, ProtocolError

DRAINING = "this ingest replica is shutting down; reconnect and resume from committed"


def admit(*, draining: bool, open_sockets: int, max_streams: int) -> ProtocolError | None:
    """None to accept a new socket; else the refusal it gets before any frame is read.
    `open_sockets` counts the sockets already accepted (not this one); `max_streams` 0 is no
    limit."""
    if draining:
        return ProtocolError(Close.RESTART, "draining", DRAINING)
    if max_streams and open_sockets >= max_streams:
        return ProtocolError(
            Close.TRY_LATER,
            "ingest-full",
            f"this ingest replica carries its maximum of {max_streams} streams; retry shortly",
        )
    return None


def drained(*, inflight: int) -> bool:
    """A draining connection may close once storage acknowledged every byte handed to it
    (`inflight` 0): the client then hears the last `ack` before the 1012, and the next replica's
    `ready` says the same `committed`."""
    return inflight == 0
