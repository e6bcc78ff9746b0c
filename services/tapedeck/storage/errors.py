"""One vocabulary of storage failures, for every backend and every caller.

Backends raise these (never a bare `OSError` or a vendor's exception), the gRPC adapter maps
them to status codes in one table (`storage/grpc_adapter.py`), and the session client maps the
status codes back to the same classes, so a caller catches `NotFound` or `Conflict` whichever
side of the wire it is on. `reason` is the detail that travels as `tapedeck-reason`.
"""

from __future__ import annotations


class StorageError(Exception):
    """Something storage could not do; `message` is readable, `reason` machine-matchable."""

    reason: str = ""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason


class InvalidArgument(StorageError, ValueError):
    """A malformed session id, object name, offset or value: the caller's mistake."""


class NotFound(StorageError):
    """No such session, or the object was never written (or is gone)."""


class OutOfRange(StorageError):
    """An offset that is not the committed size, or a read beyond the end."""


class Conflict(StorageError):
    """The session is not in a state that allows this (a compare-and-set was refused, the
    track is finished, a newer compile began)."""


class AlreadyExists(Conflict):
    """A session with this id exists."""


class Superseded(Conflict):
    """A newer writer took this object over."""


class Exhausted(StorageError):
    """A limit was reached; `reason` says which."""


class StorageFull(Exhausted):
    """The volume (or quota) is full. Nothing acknowledged was lost: the bytes of the refused
    append were cut back."""

    reason = "disk-full"


class SessionTooLarge(Exhausted):
    reason = "session-too-large"


class TooManySessions(Exhausted):
    reason = "too-many-open-sessions"


class Unavailable(StorageError):
    """Any other failure of the store (an I/O error, a store that does not answer): retry."""
