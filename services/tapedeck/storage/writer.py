"""The stream writer: a Write stream's group commit, between its queue and the backend's sink.

The gRPC adapter's reader task pulls requests off the wire into a queue bounded in bytes; the
commit loop drains whatever is queued, checks offsets and limits, hands the batch to the sink
(`append` returns once it is durable) and yields one ack. The queue bound is what keeps
memory flat under a slow disk: when it is full the reader stops reading and HTTP/2 flow
control pushes back on the sender. No gRPC here: refusals are storage/errors.py's errors.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tapedeck import metrics
from tapedeck.sessions import TRACKS
from tapedeck.storage import errors
from tapedeck.storage.registry import (
    Append,
    QueueItem,
    SessionRegistry,
    Stop,
    Stream,
    backend_error,
)
from tapedeck.storage.threads import in_thread

QUEUE_BYTES = 1024 * 1024
"""A stream's queued requests (registry.WriteQueue): three 2.5 Mbit/s frames, one upload chunk."""


@dataclass
class Ack:
    committed_size: int
    finished: bool = False


async def commit_loop(registry: SessionRegistry, stream: Stream) -> AsyncIterator[Ack]:
    """Acks until the stream finishes or its client half-closes; raises its refusal."""
    lease, sink = stream.lease, stream.sink
    limit = registry.settings.max_session_bytes
    carry: list[QueueItem] = []  # what followed a rewrite in its batch
    while True:
        batch, carry = carry or [await lease.queue.get()], []
        while not lease.queue.empty():  # bounded by the queue's bytes
            batch.append(lease.queue.get_nowait())
        chunks: list[bytes] = []
        finish = ended = False
        stop: Stop | None = None
        rewrite: Append | None = None
        offset = sink.size
        for i, item in enumerate(batch):
            if isinstance(item, Stop):
                stop = item
                break
            if item is None:
                ended = True
                break
            if stream.output is not None and item.offset < offset:
                # The output's head, filled in last: after the appends before it are durable.
                if not chunks:
                    rewrite, finish = item, item.finish
                carry = batch[i + 1 :] if rewrite is not None else batch[i:]
                break
            if item.offset != offset:
                pending = f" (+{offset - sink.size} pending)" if offset != sink.size else ""
                raise errors.OutOfRange(
                    f"write_offset {item.offset} but {stream.obj} has {offset} bytes "
                    f"committed{pending}"
                )
            if item.data:
                chunks.append(item.data)
                offset += len(item.data)
            if item.finish:
                finish = True
                break
        # Their bytes are in `chunks` now: hold each frame once, and nothing of it once
        # durable (the loop variable would keep the last frame until the next one arrives).
        del batch, item
        stop = stop or lease.stopped
        if stop is not None:
            raise stop.error
        if stream.obj in TRACKS and chunks:
            total = registry.session_bytes(stream.session_id) + (offset - sink.size)
            if total > limit:
                raise errors.SessionTooLarge(
                    f"session would hold {total} bytes, over the limit of {limit}"
                )
        if chunks or finish or rewrite is not None:
            async with lease.lock:
                if lease.stopped is not None:
                    raise lease.stopped.error
                registry.check_writable(stream)
                if rewrite is not None:
                    await _rewrite(stream, rewrite)
                else:
                    await _commit(registry, stream, chunks)
            del chunks  # whatever a sink left in it: not kept while we wait for more
            if finish:
                await registry.finish(stream)
            yield Ack(sink.size, finish)
        if finish or ended:
            return


async def _rewrite(stream: Stream, item: Append) -> None:
    assert stream.output is not None
    try:
        await in_thread(stream.output.rewrite, item.offset, item.data)
    except (errors.StorageError, OSError) as exc:
        raise backend_error(exc) from None


async def _commit(registry: SessionRegistry, stream: Stream, chunks: list[bytes]) -> None:
    before = stream.sink.size
    started = time.perf_counter()
    try:
        await in_thread(stream.sink.append, chunks)  # durable (or cut back) when it returns
    except (errors.StorageError, OSError) as exc:
        raise backend_error(exc) from None
    metrics.storage_fsync_seconds.observe(time.perf_counter() - started)
    metrics.storage_bytes_committed.labels(stream.obj).inc(stream.sink.size - before)
    registry.committed(stream)
