"""The api's cluster mode: sessions are also RecordingSession resources, compiles are requests
on them, and the operator runs the Jobs (SPEC §2, §9).

Storage stays the source of truth for a session's state and progress (the compile pod writes
them there); the resource adds what only the cluster knows: its compile Job and the
operator's message.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from tapedeck.api.errors import ApiError
from tapedeck.api.models import ResourceView
from tapedeck.cluster.kube import Kube, KubeConflict, KubeError
from tapedeck.cluster.resources import (
    LABEL_SESSION_ID,
    compile_patch,
    is_label_value,
    new_resource,
    session_id_of,
)

log = logging.getLogger(__name__)


def unavailable(err: KubeError) -> ApiError:
    return ApiError(503, "cluster-unavailable", f"the Kubernetes API failed: {err.message}")


def resource_view(resource: Mapping[str, Any]) -> ResourceView:
    status = resource.get("status") or {}
    job = status.get("job") or {}
    return ResourceView(
        name=resource["metadata"]["name"],
        phase=status.get("phase"),
        job=job.get("name"),
        message=status.get("message") or None,
    )


class ClusterSessions:
    """`CompileDispatcher` and `SessionDirectory` for the api in cluster mode."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    async def _find(self, session_id: str) -> dict[str, Any] | None:
        """The resource of a session: named after it (the api's), or labelled with it."""
        try:
            resource = await self.kube.get_session(session_id)
            if resource is not None and session_id_of(resource) == session_id:
                return resource
            if is_label_value(session_id):
                for item in await self.kube.list_sessions(f"{LABEL_SESSION_ID}={session_id}"):
                    if session_id_of(item) == session_id:
                        return item
        except KubeError as err:
            raise unavailable(err) from None
        return None

    async def created(self, session_id: str) -> None:
        try:
            await self.kube.create_session(new_resource(session_id, self.kube.namespace))
        except KubeConflict:
            pass  # created before (a retried request)
        except KubeError as err:
            raise unavailable(err) from None

    async def deleted(self, session_id: str) -> None:
        resource = await self._find(session_id)
        if resource is not None:
            try:
                await self.kube.delete_session(resource["metadata"]["name"])
            except KubeError as err:
                raise unavailable(err) from None

    async def describe(self, session_ids: Sequence[str]) -> Mapping[str, ResourceView]:
        """One list call for a page of sessions; the cluster being slow never fails a listing."""
        if not session_ids:
            return {}
        try:
            if len(session_ids) == 1:
                found = await self._find(session_ids[0])
                items = [found] if found else []
            else:
                items = await self.kube.list_sessions()
        except (KubeError, ApiError) as err:
            log.warning("cannot read RecordingSessions: %s", err)
            return {}
        wanted = set(session_ids)
        return {
            session_id_of(item): resource_view(item)
            for item in items
            if session_id_of(item) in wanted
        }

    async def submit(self, session_id: str) -> None:
        """Storage has just moved the session to `queued`: ask the operator for its Job."""
        resource = await self._find(session_id)
        try:
            if resource is None:  # a session that ingest created without the api
                await self.kube.create_session(
                    new_resource(session_id, self.kube.namespace, compile=True)
                )
                return
            patch = compile_patch(resource)
            if patch is not None:
                await self.kube.patch_session(resource["metadata"]["name"], patch)
        except KubeError as err:
            raise unavailable(err) from None
