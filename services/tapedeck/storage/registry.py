"""The session registry: what storage knows of its sessions, and every rule for changing them.

Records (the manifests, in memory and through the backend), the durable sizes of tracks, the
per-session manifest locks and the write leases live here, with the state transitions and
compare-and-sets. No gRPC: it speaks `SessionRecord` and raises storage/errors.py's errors,
so it is tested without a server (tests/storage/test_registry.py); `server.py` adapts it to
the wire. The pure rules (`apply_change`, `page`) take no lock and touch no backend.

Blocking backend work runs through `threads.in_thread`: a cancelled call waits for its
thread before it releases a lock or forgets a session.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tapedeck import metrics
from tapedeck.lifecycle import check_expiry, check_ttl
from tapedeck.sessions import (
    OBJECTS,
    OUTPUT,
    TRACKS,
    InvalidTitle,
    State,
    default_title,
    is_object,
    is_output,
    is_output_name,
    is_valid_session_id,
    new_session_id,
    valid_started_at,
    validate_title,
)
from tapedeck.settings import Settings
from tapedeck.storage import errors
from tapedeck.storage.backend import Backend, OutputSink, TrackSink
from tapedeck.storage.records import (
    NamedOutputRecord,
    OutputRecord,
    SessionRecord,
    TrackRecord,
    now_ms,
)
from tapedeck.storage.threads import finish_regardless, in_thread
from tapedeck.webhooks.events import Event, gone_events, transition_events
from tapedeck.webhooks.outbox import Outbox

log = logging.getLogger(__name__)

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50


def invalid_id(session_id: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(f"invalid session id {session_id[:80]!r}")


def checked_object(name: str) -> str:
    if not is_object(name):
        raise errors.InvalidArgument(
            f"unknown object {name[:40]!r}: expected one of {', '.join(OBJECTS)} "
            "or a named output (poster.jpg, storyboard.vtt, hls.m3u8, ...)"
        )
    return name


def checked_title(title: str) -> str:
    try:
        return validate_title(title)
    except InvalidTitle as err:
        raise errors.InvalidArgument(str(err)) from None


def matches(record: SessionRecord, query: str) -> bool:
    """`?q=`: a case-insensitive substring of the title (the default one too) or the id."""
    needle = query.casefold()
    title = record.title or default_title(record.created_at_ms)
    return needle in title.casefold() or needle in record.id


def backend_error(exc: errors.StorageError | OSError) -> errors.StorageError:
    """A backend's failure as the contract's error (an `OSError` is a backend's bug)."""
    if isinstance(exc, errors.StorageError):
        return exc
    log.error("storage I/O error: %s", exc)
    return errors.Unavailable(f"storage I/O error: {exc.strerror or exc}")


# --- the pure rules ---------------------------------------------------------------------------


@dataclass
class Change:
    """One `UpdateSession`: the compare-and-set conditions, then what to change."""

    if_state_in: frozenset[State] | None = None
    """None: no condition; otherwise the session's state must be one of these."""
    if_compile_generation: int | None = None
    state: State | None = None
    progress: float | None = None
    error: str | None = None
    expires_at_ms: int | None = None
    compile_attempts: int | None = None
    begin_compile: bool = False
    output: OutputRecord | None = None
    """Output metadata (duration, codecs): size and etag are storage's own, never taken."""
    finish_tracks: bool = False
    title: str | None = None


def apply_change(record: SessionRecord, change: Change, writing: Iterable[str]) -> SessionRecord:
    """The record after `change`, or the refusal (`Conflict`, `InvalidArgument`). `writing`:
    the tracks with an open Write stream."""
    if change.if_state_in is not None and record.state not in change.if_state_in:
        raise errors.Conflict(f"session {record.id} is {record.state.value}")
    if (
        change.if_compile_generation is not None
        and change.if_compile_generation != record.compile_generation
    ):
        raise errors.Conflict(
            f"compile {change.if_compile_generation} of {record.id} was superseded "
            f"by compile {record.compile_generation}"
        )
    updated = record.model_copy(deep=True)
    if change.title is not None:
        updated.title = checked_title(change.title)
    if change.state is not None:
        updated.state = change.state
    if change.progress is not None:
        updated.progress = min(1.0, max(0.0, change.progress))
    if change.error is not None:
        updated.error = change.error[-4000:]
    if change.expires_at_ms is not None:
        try:
            check_expiry(change.expires_at_ms, record.created_at_ms)
        except ValueError as err:
            raise errors.InvalidArgument(str(err)) from None
        updated.expires_at_ms = change.expires_at_ms
    if change.compile_attempts is not None:
        updated.compile_attempts = change.compile_attempts
    if change.begin_compile:
        updated.state = State.COMPILING
        updated.progress, updated.error = 0.0, ""
        # An earlier attempt's output is void: this compile publishes over its file, and a
        # crash between that rename and the next manifest save must not leave the old size
        # and etag describing the new bytes.
        updated.output = None
        updated.named_outputs = {}
        updated.compile_attempts += 1
        updated.compile_generation += 1
    if change.output is not None:
        current = updated.output or OutputRecord()
        updated.output = current.model_copy(
            update={
                "duration_seconds": change.output.duration_seconds,
                "video_codec": change.output.video_codec,
                "audio_codec": change.output.audio_codec,
            }
        )
    if change.finish_tracks:
        for track in updated.tracks.values():
            track.finished = True
        if updated.state == State.RECORDING:
            updated.state = State.RECORDED
    busy = list(writing)
    if record.state == State.RECORDING and updated.state != State.RECORDING and busy:
        # A writer that (re)connected after the caller looked would otherwise keep getting
        # acks for bytes no compile will read.
        raise errors.Conflict(f"session {record.id} is being written ({', '.join(busy)})")
    return updated


AHEAD_STATES = frozenset({State.RECORDING, State.RECORDED, State.QUEUED})
"""Where the next compile's output may already be written (a follower's MP4, as it grows)."""


def check_output(
    record: SessionRecord, generation: int, publish: bool = False, name: str = OUTPUT
) -> None:
    """Only the compile that began last may write the output, and only while compiling: a
    late compile must never replace a published MP4. Before that compile begins, its output
    may be written ahead (`compile_generation + 1`, while the session records or waits), but
    published only once it began. Once that compile made the session `ready` (its MP4
    published), it may still add named outputs (the extras follow `ready`), never the MP4."""
    if not publish and record.state in AHEAD_STATES and generation == record.compile_generation + 1:
        return
    if record.state == State.READY and name != OUTPUT and generation == record.compile_generation:
        return
    if record.state != State.COMPILING or generation != record.compile_generation:
        raise errors.Conflict(
            f"output of compile {generation} refused: session {record.id} is "
            f"{record.state.value} at compile {record.compile_generation}"
        )


def page(
    records: Iterable[SessionRecord],
    size: int,
    token: str,
    states: frozenset[State],
    query: str = "",
) -> tuple[list[SessionRecord], str]:
    """Newest first, after the cursor `token` (a keyset: creation time, then id)."""
    if size < 0:
        raise errors.InvalidArgument("page_size must be >= 0")
    size = min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    after: tuple[int, str] | None = None
    if token:
        try:
            created, _, sid = base64.urlsafe_b64decode(token).decode().partition(":")
            after = (int(created), sid)
        except ValueError:
            raise errors.InvalidArgument("malformed page token") from None
    ordered = sorted(records, key=lambda r: (r.created_at_ms, r.id), reverse=True)
    found: list[SessionRecord] = []
    more = False
    for record in ordered:
        if after is not None and (record.created_at_ms, record.id) >= after:
            continue
        if states and record.state not in states:
            continue
        if query and not matches(record, query):
            continue
        if len(found) == size:
            more = True
            break
        found.append(record)
    next_token = ""
    if more and found:
        last = found[-1]
        next_token = base64.urlsafe_b64encode(f"{last.created_at_ms}:{last.id}".encode()).decode()
    return found, next_token


# --- write leases -----------------------------------------------------------------------------


@dataclass
class Append:
    """One message of a Write stream, off the wire."""

    offset: int
    data: bytes
    finish: bool = False


@dataclass
class Stop:
    """Put into a stream's queue to end it: superseded by a newer writer, or deleted."""

    error: errors.StorageError


QueueItem = Append | Stop | None
"""None: the client half-closed."""


class WriteQueue:
    """A Write stream's queue between its reader and its commit loop, bounded in bytes.

    A bound in messages held eight 312 KiB frames or eight 4 MiB upload chunks per stream
    alike (docs/performance.md); in bytes, hundreds of streams cost a known amount however
    their clients cut the data. `put` waits while the queued bytes would pass `max_bytes`,
    except into an empty queue (one message of any allowed size always fits); `put_nowait`
    never waits, for the end markers and the first message."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._items: deque[QueueItem] = deque()
        self._added = asyncio.Event()
        self._taken = asyncio.Event()

    @staticmethod
    def _size(item: QueueItem) -> int:
        return len(item.data) if isinstance(item, Append) else 0

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: QueueItem) -> None:
        self._items.append(item)
        self.queued_bytes += self._size(item)
        self._added.set()

    async def put(self, item: QueueItem) -> None:
        size = self._size(item)
        while self._items and self.queued_bytes + size > self.max_bytes:
            self._taken.clear()
            await self._taken.wait()
        self.put_nowait(item)

    def get_nowait(self) -> QueueItem:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        self.queued_bytes -= self._size(item)
        self._taken.set()
        return item

    async def get(self) -> QueueItem:
        while not self._items:
            self._added.clear()
            await self._added.wait()
        return self.get_nowait()


@dataclass
class Lease:
    """The one Write stream allowed to append to an object."""

    queue: WriteQueue
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stopped: Stop | None = None

    def stop(self, error: errors.StorageError) -> None:
        self.stopped = Stop(error)
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(self.stopped)


@dataclass
class Stream:
    """An open Write stream: what it writes, through which sink, under which lease."""

    session_id: str
    obj: str
    lease: Lease
    sink: TrackSink
    output: OutputSink | None = None  # the same sink, when it is the output
    generation: int = 0  # the output's compile generation


@dataclass
class Opening:
    """The first message of a Write stream."""

    session_id: str
    obj: str
    mime_type: str = ""
    started_at: float = 0.0
    compile_generation: int = 0


def pending(record: SessionRecord) -> list[Event]:
    """The webhook events a record's manifest holds as not yet in the outbox."""
    return [Event.model_validate(e) for e in record.pending_events]


# --- the registry -----------------------------------------------------------------------------


class SessionRegistry:
    def __init__(self, backend: Backend, settings: Settings, outbox: Outbox | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.outbox = outbox
        """Webhook events of every transition go here (None: no webhooks configured)."""
        self.records: dict[str, SessionRecord] = {r.id: r for r in backend.load_all()}
        if outbox is not None:
            for record in list(self.records.values()):
                if record.pending_events:
                    self.records[record.id] = self._flush_pending(record)
        self.sizes: dict[tuple[str, str], int] = {}
        started = now_ms()
        for record in self.records.values():
            for name, track in record.tracks.items():
                self.sizes[(record.id, name)] = backend.size(record.id, name)
                if record.state == State.RECORDING:
                    # A restart is not the client's silence: its idle time counts from now,
                    # so idle finalization never closes a recording whose client is only
                    # waiting to reconnect (the last write time is kept in memory only).
                    track.updated_at_ms = max(track.updated_at_ms, started)
        self.leases: dict[tuple[str, str], Lease] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        metrics.storage_sessions.set(len(self.records))

    # --- reading ---------------------------------------------------------------------------

    def get(self, session_id: str) -> SessionRecord:
        if not is_valid_session_id(session_id):
            raise invalid_id(session_id)
        record = self.records.get(session_id)
        if record is None:
            raise errors.NotFound(f"session {session_id} not found")
        return record

    def writing(self, session_id: str) -> list[str]:
        return [t for t in TRACKS if (session_id, t) in self.leases]

    def track_sizes(self, record: SessionRecord) -> dict[str, int]:
        return {t: self.sizes.get((record.id, t), 0) for t in record.tracks}

    def session_bytes(self, session_id: str) -> int:
        return sum(self.sizes.get((session_id, t), 0) for t in TRACKS)

    def page(
        self, size: int, token: str, states: frozenset[State], query: str = ""
    ) -> tuple[list[SessionRecord], str]:
        return page(self.records.values(), size, token, states, query)

    def write_status(self, session_id: str, obj: str) -> tuple[int, bool]:
        """(committed size, complete)."""
        record = self.get(session_id)
        if checked_object(obj) == OUTPUT:
            return (record.output.size if record.output else 0), record.output is not None
        if is_output_name(obj):
            named = record.named_outputs.get(obj)
            return (named.size if named else 0), named is not None
        track = record.tracks.get(obj)
        return self.sizes.get((record.id, obj), 0), bool(track and track.finished)

    def read_range(self, session_id: str, obj: str, offset: int, limit: int) -> tuple[int, int]:
        """(offset, limit) of a read, checked: only durable bytes, never beyond the end."""
        record = self.get(session_id)
        checked_object(obj)
        if offset < 0 or limit < 0:
            raise errors.OutOfRange("negative offset or limit")
        if obj == OUTPUT:
            if record.output is None:
                raise errors.NotFound("no output yet")
            size = record.output.size
        elif is_output_name(obj):
            named = record.named_outputs.get(obj)
            if named is None:
                raise errors.NotFound(f"no {obj} output")
            size = named.size
        else:
            if obj not in record.tracks:
                raise errors.NotFound(f"no {obj} track")
            size = self.sizes.get((record.id, obj), 0)  # never expose bytes that are not durable
        if offset > size:
            raise errors.OutOfRange(f"read_offset {offset} beyond size {size}")
        return offset, min(size - offset, limit) if limit else size - offset

    def read(self, session_id: str, obj: str, offset: int, limit: int) -> Iterator[bytes]:
        """The backend's chunks (blocking: the caller pulls them in threads)."""
        return self.backend.read(session_id, obj, offset, limit)

    # --- changing sessions -----------------------------------------------------------------

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    async def _save(self, record: SessionRecord) -> None:
        """Saves a change with its webhook events (`pending_events`), then puts them in the
        outbox, durable before the caller's answer (under the session's lock, so a session's
        events are in the order of its changes). An outbox that cannot be written keeps them
        pending in the manifest for the next save or start, rather than failing a change that
        is already made."""
        record.updated_at_ms = now_ms()
        before = self.records.get(record.id)
        if self.outbox is not None:
            new = transition_events(before, record)
            record.pending_events += [event.model_dump(mode="json") for event in new]
        try:
            await in_thread(self.backend.save, record.model_copy(deep=True))
        except (errors.StorageError, OSError) as exc:
            raise backend_error(exc) from None
        self.records[record.id] = record
        if self.outbox is not None and record.pending_events:
            self.records[record.id] = await in_thread(self._flush_pending, record)

    def _flush_pending(self, record: SessionRecord) -> SessionRecord:
        """`record` after its pending events went to the outbox (blocking). When the outbox or
        the manifest cannot be written, the record as it was: the events stay pending (a
        manifest that still lists appended events appends them again: the same webhook-id,
        which receivers deduplicate)."""
        if not self._append(pending(record)):
            return record
        cleared = record.model_copy(deep=True, update={"pending_events": []})
        try:
            self.backend.save(cleared.model_copy(deep=True))
        except (errors.StorageError, OSError) as exc:
            log.warning("webhook events of %s stay pending in its manifest: %s", record.id, exc)
            return record
        return cleared

    def _append(self, events: list[Event]) -> bool:
        """Puts `events` in the outbox (blocking); False, logged, when it cannot be written."""
        assert self.outbox is not None
        try:
            self.outbox.append(events)
        except OSError as exc:
            log.error(
                "webhook outbox: %s not written (%s)",
                ", ".join(e.type for e in events),
                exc.strerror,
            )
            return False
        metrics.webhook_outbox_events.set(len(self.outbox))
        return True

    async def create(
        self, session_id: str = "", ttl_seconds: int = 0, title: str = ""
    ) -> SessionRecord:
        session_id = session_id or new_session_id()
        title = checked_title(title) if title else ""
        if not is_valid_session_id(session_id):
            raise invalid_id(session_id)
        if ttl_seconds:
            try:
                check_ttl(ttl_seconds)
            except ValueError as err:
                raise errors.InvalidArgument(str(err)) from None
        async with self._lock(session_id):
            if session_id in self.records:
                raise errors.AlreadyExists(f"session {session_id} exists")
            recording = sum(r.state == State.RECORDING for r in self.records.values())
            if recording >= self.settings.max_open_sessions:
                raise errors.TooManySessions(
                    f"{recording} sessions are recording, the limit is "
                    f"{self.settings.max_open_sessions}; finish some first"
                )
            created = now_ms()
            ttl_ms = (ttl_seconds * 1000) or int(self.settings.session_ttl.total_seconds() * 1000)
            record = SessionRecord(
                id=session_id,
                created_at_ms=created,
                expires_at_ms=created + ttl_ms,
                title=title,
                replica=self.settings.storage_replica,
            )
            await self._save(record)
            metrics.storage_sessions.set(len(self.records))
            return record

    async def update(self, session_id: str, change: Change) -> SessionRecord:
        self.get(session_id)
        async with self._lock(session_id):
            # Re-read under the lock: a change that held it meanwhile must not be lost.
            record = self.get(session_id)
            updated = apply_change(record, change, self.writing(record.id))
            await self._save(updated)
            return updated

    async def delete(self, session_id: str) -> None:
        """Once begun, runs to its end: a cancelled delete must neither leave the files of a
        session it already forgot nor forget a session whose files it left."""
        self.get(session_id)
        await finish_regardless(self._delete(session_id))

    async def _delete(self, session_id: str) -> None:
        async with self._lock(session_id):
            if session_id not in self.records:
                return  # a concurrent delete got here first
            for key in [k for k in self.leases if k[0] == session_id]:
                lease = self.leases.get(key)
                if lease is not None:
                    lease.stop(errors.NotFound(f"session {session_id} was deleted"))
                    async with lease.lock:
                        pass
            try:
                await in_thread(self.backend.delete, session_id)  # files first, durably
            except (errors.StorageError, OSError) as exc:
                raise backend_error(exc) from None
            gone = self.records.pop(session_id, None)
            for obj in TRACKS:
                self.sizes.pop((session_id, obj), None)
            metrics.storage_sessions.set(len(self.records))
            if gone is not None and self.outbox is not None:
                # The manifest is gone: an event that cannot be written now is lost (logged).
                await in_thread(self._append, [*pending(gone), *gone_events(gone, now_ms())])
        self._locks.pop(session_id, None)

    # --- write streams ---------------------------------------------------------------------

    async def open_stream(self, first: Opening, queue: WriteQueue) -> Stream:
        """Takes the object's lease (stopping an older writer) and opens its sink."""
        record = self.get(first.session_id)
        obj = checked_object(first.obj)
        key = (record.id, obj)
        async with self._lock(record.id):
            # Re-read under the lock: two tracks opening at once must both be recorded.
            record = self.get(first.session_id)
            if is_output(obj):
                check_output(record, first.compile_generation, name=obj)
                new = True
            else:
                new = await self._open_track(record, obj, first)
            old = self.leases.get(key)
            lease = Lease(queue)
            # Held (taken at once: it is new) until the sink is open: a writer taking over
            # this one waits for it, and so for every older writer's batch in flight.
            await lease.lock.acquire()
            self.leases[key] = lease
        try:
            if old is not None:
                old.stop(errors.Superseded(f"a newer writer took over {obj}"))
                async with old.lock:  # let the old writer's batch in flight land first
                    pass
            sink, output = await self._open_sink(record.id, obj, new)
        except BaseException as exc:
            if self.leases.get(key) is lease:
                del self.leases[key]
            if isinstance(exc, (errors.StorageError, OSError)):
                raise backend_error(exc) from None
            raise
        finally:
            lease.lock.release()
        if obj in TRACKS:
            self.sizes[key] = sink.size
        return Stream(record.id, obj, lease, sink, output, first.compile_generation)

    def close_stream(self, stream: Stream) -> None:
        """Once every thread job of the stream has ended (threads.in_thread), so no write
        can follow the close into a reused descriptor."""
        key = (stream.session_id, stream.obj)
        if self.leases.get(key) is stream.lease:
            del self.leases[key]
        stream.sink.close()

    async def _open_sink(
        self, session_id: str, obj: str, new: bool
    ) -> tuple[TrackSink, OutputSink | None]:
        """Opens in a worker thread (opening syncs: the file's unsynced bytes, or a new file's
        directory entry). A call cancelled meanwhile still gets the open to its end and closes
        the sink, so no descriptor is lost (on a full volume, a deleted file's space returns
        only when its last descriptor closes)."""

        def open_sink() -> tuple[TrackSink, OutputSink | None]:
            if is_output(obj):
                output = self.backend.open_output(session_id, obj)
                return output, output
            return self.backend.open_track(session_id, obj, new=new), None

        opening = asyncio.get_running_loop().run_in_executor(None, open_sink)
        try:
            return await finish_regardless(opening)
        except asyncio.CancelledError:
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                opening.result()[0].close()
            raise

    async def _open_track(self, record: SessionRecord, track: str, first: Opening) -> bool:
        """Records the track in the manifest; True when it is new (its file starts empty)."""
        existing = record.tracks.get(track)
        if existing is not None and existing.finished:
            raise errors.Conflict(f"{track} track of {record.id} is finished")
        # A track that opens after the others finished (it raced them) reopens a `recorded`
        # session; once a compile was requested, the recording is closed for good.
        reopen = existing is None and record.state == State.RECORDED
        if record.state != State.RECORDING and not reopen:
            raise errors.Conflict(f"session {record.id} is {record.state.value}, not recording")
        if existing is None or (first.mime_type and not existing.mime_type):
            if not valid_started_at(first.started_at):
                # A NaN would be saved as null, and a manifest that does not load hides the
                # whole session at the next start.
                raise errors.InvalidArgument(
                    f"started_at {first.started_at!r} is not epoch milliseconds (or 0)"
                )
            updated = record.model_copy(deep=True)
            updated.state = State.RECORDING
            updated.tracks[track] = TrackRecord(
                name=track,
                mime_type=first.mime_type[:200],
                started_at=first.started_at,
                updated_at_ms=now_ms(),
            )
            await self._save(updated)
        return existing is None

    def check_writable(self, stream: Stream) -> None:
        """Before each commit: bytes are acknowledged only while the track can still be
        compiled, and the output only while its compile is the newest."""
        if is_output(stream.obj):
            check_output(self.get(stream.session_id), stream.generation, name=stream.obj)
            return
        record = self.records.get(stream.session_id)
        if record is None:
            raise errors.NotFound(f"session {stream.session_id} was deleted")
        if record.state != State.RECORDING or record.tracks[stream.obj].finished:
            raise errors.Conflict(
                f"{stream.obj} track of {stream.session_id} is finished ({record.state.value})"
            )

    def committed(self, stream: Stream) -> None:
        """A commit landed: the track's durable size and (in memory only, persisted with the
        next manifest save) its last write time, which idle finalization needs recent, not
        durable (a restart counts as a write)."""
        if stream.obj not in TRACKS:
            return
        self.sizes[(stream.session_id, stream.obj)] = stream.sink.size
        record = self.records.get(stream.session_id)
        if record is not None and stream.obj in record.tracks:
            record.tracks[stream.obj].updated_at_ms = now_ms()

    async def finish(self, stream: Stream) -> None:
        """Closes a track (a session whose tracks are all closed is `recorded`), or publishes
        the output and records its size and ETag."""
        session_id, obj = stream.session_id, stream.obj
        async with self._lock(session_id):
            record = self.records.get(session_id)
            if record is None:
                raise errors.NotFound("session was deleted")
            updated = record.model_copy(deep=True)
            if is_output(obj):
                check_output(record, stream.generation, publish=True, name=obj)
                assert stream.output is not None
                try:
                    etag = await in_thread(stream.output.publish)
                except (errors.StorageError, OSError) as exc:
                    raise backend_error(exc) from None
                if obj == OUTPUT:
                    updated.output = OutputRecord(size=stream.sink.size, etag=etag)
                else:
                    updated.named_outputs[obj] = NamedOutputRecord(size=stream.sink.size, etag=etag)
            else:
                updated.tracks[obj].finished = True
                updated.tracks[obj].updated_at_ms = now_ms()
                if updated.state == State.RECORDING and all(
                    t.finished for t in updated.tracks.values()
                ):
                    updated.state = State.RECORDED
            await self._save(updated)
