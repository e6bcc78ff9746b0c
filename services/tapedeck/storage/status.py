"""storage/errors.py's errors as gRPC status codes and back: the one table for both sides.

The server's adapter ends a call with `code_of(error)` (and the error's `reason` as trailing
metadata `tapedeck-reason`); the client turns a status back into the same error class with
`error_class(code, reason)`, so callers catch `NotFound` or `Conflict`, never a status code.
"""

from __future__ import annotations

import grpc

from tapedeck.storage import errors

REASON_KEY = "tapedeck-reason"

# Most specific first: a subclass before its base.
_CODES: tuple[tuple[type[errors.StorageError], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.Superseded, grpc.StatusCode.ABORTED),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Exhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
)
_EXHAUSTED: dict[str, type[errors.Exhausted]] = {
    cls.reason: cls for cls in (errors.StorageFull, errors.SessionTooLarge, errors.TooManySessions)
}


def code_of(error: errors.StorageError) -> grpc.StatusCode:
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.UNAVAILABLE


def error_class(code: grpc.StatusCode, reason: str = "") -> type[errors.StorageError]:
    """The error a status stands for (`Unavailable` for what storage itself never sends:
    gRPC's own "not reachable", a deadline, an internal error)."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return _EXHAUSTED.get(reason, errors.Exhausted)
    for cls, mapped in _CODES:
        if mapped == code:
            return cls
    return errors.Unavailable
