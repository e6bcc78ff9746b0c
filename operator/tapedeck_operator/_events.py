"""Storage's events (the webhook outbox) as Kubernetes Events on the session's
RecordingSession: the one source of what `kubectl describe` and webhooks say about a
session's transitions (status.py's `events` keeps only the operator's own decisions)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tapedeck.cluster.kube import Kube, KubeConflict
from tapedeck.cluster.resources import LABEL_SESSION_ID, is_label_value, session_id_of
from tapedeck.webhooks.events import Event
from tapedeck_operator import status as st


async def find_resource(kube: Kube, session_id: str) -> Mapping[str, Any] | None:
    """The session's RecordingSession: named after it (the api's), else labelled with it."""
    found = await kube.get_session(session_id)
    if found is not None and session_id_of(found) == session_id:
        return found
    if is_label_value(session_id):
        for candidate in await kube.list_sessions(f"{LABEL_SESSION_ID}={session_id}"):
            if session_id_of(candidate) == session_id:
                return candidate
    return None


async def post_session_event(kube: Kube, event: Event) -> None:
    """Posts `event` where the session has a resource (nothing where it has none). A Kubernetes
    error raises: the deliverer retries it like a webhook."""
    resource = await find_resource(kube, event.session_id)
    if resource is None:
        return
    body = st.session_event(event.id, event.type, event.data, resource, datetime.now(UTC))
    namespace = resource["metadata"]["namespace"]
    try:
        await kube.call("POST", f"/api/v1/namespaces/{namespace}/events", body)
    except KubeConflict:
        pass  # posted before (same name): once is enough
