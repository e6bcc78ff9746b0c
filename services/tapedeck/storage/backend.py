"""The backend contract: where bytes live, shaped so that an object store fits it.

Shaped like tusd's `DataStore` + composer: a small required interface (`Backend`, whose sinks
are `TrackSink` and `OutputSink`) and optional capabilities a backend may add (`Presigning`,
`Closing`), which callers discover with `isinstance`. Every backend raises only the errors of
`storage/errors.py` and passes the conformance suite (tests/storage/test_backend_conformance.py)
unchanged; adding one is a class here, a branch in `open_backend`, and one entry in
tests/storage/backends.py.

Every method is blocking: the storage server calls them in worker threads that a cancelled
call still waits for (storage/threads.py), so a backend never has to cope with being abandoned
half-way. The one exception is `close` of a sink, called once no thread uses it.

What a method promises:
- `TrackSink.append(chunks)` writes the chunks after the durable size and makes them durable
  before it returns the new durable size (the server acknowledges exactly that). On a full
  volume it cuts back what it wrote and raises `StorageFull`; the sink stays usable. It may
  clear `chunks` once they are written (frees memory before the slow sync).
- `TrackSink.size` is the durable size: the first answer to a (re)connecting writer.
- `OutputSink` writes the compiled output beside its final name; `publish()` makes it visible
  at once, whole, and returns its ETag: a content validator (equal ETags, equal bytes).
  `rewrite(offset, data)` replaces one region of committed bytes once, in order (an MP4
  uploaded as it grows gets its head last, in pieces); the ETag hashes the write log (bytes
  in order, then the rewrite), so it is the content's SHA-256 without a rewrite and still
  determines the content with one.
  `open_output(id, name)`: `name` is `output` (the MP4) or a named output (`poster.jpg`,
  `storyboard.vtt`, `hls-00001.m4s`, ...: `sessions.is_output_name`, one flat name, validated
  before it reaches a path or key: `InvalidArgument`). `read`/`size` take the same names.
  Fencing by compile generation is the registry's job, not the backend's.
- `read(id, obj, offset, limit)` yields the object's bytes from `offset` (`limit` 0: to the
  end) in chunks; `NotFound` when it was never written.
- `save` / `load` / `load_all` / `delete` keep manifests: `load_all` skips what is not a
  whole manifest (a damaged or foreign entry hides nothing else); `delete` is idempotent and
  gone for good once it returns (tracks, output and manifest).
- Every session id is validated before it reaches a path or a key (`InvalidArgument`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from tapedeck.sessions import OUTPUT
from tapedeck.settings import Settings
from tapedeck.storage.records import SessionRecord


class TrackSink(Protocol):
    """An open track: appends that are durable when `append` returns."""

    @property
    def size(self) -> int:
        """The durable size."""
        ...

    def append(self, chunks: list[bytes]) -> int:
        """Write and make durable; the new durable size. `StorageFull` cuts back first."""
        ...

    def close(self) -> None: ...


class OutputSink(TrackSink, Protocol):
    """The compiled output while it is written: invisible until `publish`."""

    def rewrite(self, offset: int, data: bytes) -> None:
        """Replace committed bytes (an MP4's head, filled in last), durably: one region per
        output, once, in order (several calls, each where the last ended, no append between);
        anything else, or bytes beyond the committed size, is `OutOfRange`."""
        ...

    def publish(self) -> str:
        """Make the output visible, whole and durable; its ETag (a content validator)."""
        ...


class Backend(Protocol):
    def load_all(self) -> list[SessionRecord]:
        """Every session's manifest; also clears what interrupted deletes and saves left."""
        ...

    def load(self, session_id: str) -> SessionRecord:
        """One manifest; `NotFound` when there is none (or it is damaged)."""
        ...

    def save(self, record: SessionRecord) -> None:
        """Replace the manifest atomically and durably."""
        ...

    def delete(self, session_id: str) -> None:
        """Remove the session (manifest, tracks, output) for good; no error when absent."""
        ...

    def size(self, session_id: str, obj: str) -> int:
        """An object's durable size; 0 when it was never written."""
        ...

    def open_track(self, session_id: str, track: str, new: bool) -> TrackSink:
        """`new`: the track was just added to the manifest, so whatever the store holds under
        its name (left by a deleted session of the same id) is not its bytes: it starts empty."""
        ...

    def open_output(self, session_id: str, name: str = OUTPUT) -> OutputSink:
        """`name`: `output` (the MP4) or a named output (poster, storyboard, HLS parts)."""
        ...

    def read(self, session_id: str, obj: str, offset: int, limit: int) -> Iterator[bytes]: ...


@runtime_checkable
class Presigning(Protocol):
    """Optional: objects a browser can fetch straight from the store (downloads by URL)."""

    def presign_read(
        self, session_id: str, obj: str, expires_seconds: int, filename: str
    ) -> str: ...


@runtime_checkable
class Closing(Protocol):
    """Optional: a backend that holds connections or background work to end at shutdown."""

    def close(self) -> None: ...


def open_backend(settings: Settings) -> Backend:
    """The backend the settings ask for. Local files unless an object tier is configured."""
    if settings.s3_bucket:
        # The S3-compatible tier (storage/s3tier.py): the volume at `data_dir` in front of the
        # bucket. Its own settings (AWS_*, TAPEDECK_S3_*) are read here.
        from pydantic import ValidationError

        from tapedeck.settings import S3Settings
        from tapedeck.storage.s3tier import S3TieredBackend

        try:
            s3 = S3Settings()
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}={str(err.get('input'))[:70]!r}: "
                f"{err['msg']}"
                for err in e.errors()
            )
            raise SystemExit(
                f"storage: bad S3 tier settings (TAPEDECK_S3_*, AWS_*): {problems}"
            ) from None
        return S3TieredBackend(settings.data_dir, s3)
    from tapedeck.storage.local import LocalBackend

    return LocalBackend(settings.data_dir)


def close_backend(backend: Backend) -> None:
    if isinstance(backend, Closing):
        backend.close()
