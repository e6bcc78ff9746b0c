"""Errors, classified for kopf: temporary ones are retried with a delay, permanent ones are
reported (in status and as a Warning event) and wait for the spec to change."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import kopf

from tapedeck.cluster.kube import KubeError
from tapedeck.storage.client import StorageError

RETRY_DELAY = 10.0

_TEMPORARY_STORAGE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


@contextlib.contextmanager
def classified(doing: str) -> Iterator[None]:
    """Turn storage and Kubernetes API failures into kopf's temporary or permanent errors."""
    try:
        yield
    except StorageError as err:
        if err.code in _TEMPORARY_STORAGE:
            raise kopf.TemporaryError(
                f"storage unavailable while {doing}: {err.message}", delay=RETRY_DELAY
            ) from err
        raise kopf.PermanentError(f"storage refused {doing}: {err.message}") from err
    except KubeError as err:
        # 401/403 are fixed by correcting RBAC, not by changing the resource: keep trying.
        if err.temporary or err.status in (401, 403):
            raise kopf.TemporaryError(
                f"Kubernetes API failed while {doing}: {err}", delay=RETRY_DELAY
            ) from err
        raise kopf.PermanentError(f"Kubernetes API refused {doing}: {err}") from err
