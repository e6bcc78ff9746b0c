"""A small Kubernetes client for RecordingSessions and Jobs, shared by the api and the operator.

The official `kubernetes` client (synchronous, urllib3) does the configuration, TLS and auth
(in-cluster service account, or a kubeconfig); its calls run in a thread so they never block
the event loop. Objects stay plain JSON dicts: merge patches are exact, and nothing is lost
to model round-trips.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import kubernetes
import urllib3

from tapedeck.cluster.resources import GROUP, PLURAL, VERSION
from tapedeck.settings import Settings

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
TIMEOUT = (5.0, 30.0)  # connect, read

MERGE_PATCH = "application/merge-patch+json"

Json = dict[str, Any]


class KubeError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (0: not reachable)."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status, self.message, self.reason = status, message, reason

    @property
    def temporary(self) -> bool:
        """Worth retrying as it is: unreachable, throttled, or a server-side failure."""
        return self.status in (0, 408, 429) or self.status >= 500


class KubeNotFound(KubeError):
    pass


class KubeConflict(KubeError):
    pass


def _error(status: int, body: bytes | str | None) -> KubeError:
    message, reason = "", ""
    try:
        parsed = json.loads(body or b"{}")
        message, reason = str(parsed.get("message", "")), str(parsed.get("reason", ""))
    except (ValueError, AttributeError):
        message = str(body or "")[:500]
    cls = {404: KubeNotFound, 409: KubeConflict}.get(status, KubeError)
    return cls(status, message or f"HTTP {status}", reason)


def _kubeconfig() -> str | None:
    """KUBECONFIG as it is now (the client reads it once, when it is imported)."""
    return os.environ.get("KUBECONFIG") or None


def default_namespace(settings: Settings) -> str:
    """TAPEDECK_NAMESPACE, else the pod's own namespace, else the kubeconfig context's."""
    if settings.namespace:
        return settings.namespace
    if SERVICE_ACCOUNT_NAMESPACE.exists():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    try:
        _, current = kubernetes.config.list_kube_config_contexts(_kubeconfig())  # type: ignore[no-untyped-call]
    except (kubernetes.config.ConfigException, OSError):
        return "default"
    return str((current or {}).get("context", {}).get("namespace") or "default")


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient, namespace: str) -> None:
        self.api = api
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> Kube:
        """In a pod: its service account; elsewhere: the current kubeconfig context."""
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(_kubeconfig(), client_configuration=config)  # type: ignore[no-untyped-call]
        return cls(kubernetes.client.ApiClient(config), default_namespace(settings))

    @classmethod
    def for_server(cls, server: str, namespace: str) -> Kube:
        config = kubernetes.client.Configuration(host=server.rstrip("/"))
        return cls(kubernetes.client.ApiClient(config), namespace)

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    # --- raw calls ---

    def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        query: Sequence[tuple[str, str]] = (),
    ) -> Any:
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*request, _request_timeout=TIMEOUT)
            response.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as err:
            raise _error(err.status or 0, err.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise KubeError(0, f"the Kubernetes API is not reachable: {err}") from None
        if not 200 <= response.status <= 299:
            raise _error(response.status, response.data)
        return json.loads(response.data) if response.data else None

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        query: Sequence[tuple[str, str]] = (),
    ) -> Any:
        return await asyncio.to_thread(self._call, method, path, body, content_type, query)

    # --- RecordingSessions ---

    def sessions_path(
        self, name: str | None = None, status: bool = False, namespace: str | None = None
    ) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace or self.namespace}/{PLURAL}"
        path += f"/{name}" if name else ""
        return path + ("/status" if status else "")

    async def get_session(self, name: str, namespace: str | None = None) -> Json | None:
        try:
            result: Json = await self.call("GET", self.sessions_path(name, namespace=namespace))
        except KubeNotFound:
            return None
        return result

    async def list_sessions(self, label_selector: str = "") -> list[Json]:
        query = [("labelSelector", label_selector)] if label_selector else []
        result = await self.call("GET", self.sessions_path(), query=query)
        return list(result.get("items", []))

    async def create_session(self, body: Mapping[str, Any]) -> Json:
        result: Json = await self.call("POST", self.sessions_path(), dict(body))
        return result

    async def patch_session(
        self, name: str, patch: Mapping[str, Any], namespace: str | None = None
    ) -> Json:
        path = self.sessions_path(name, namespace=namespace)
        result: Json = await self.call("PATCH", path, dict(patch), MERGE_PATCH)
        return result

    async def patch_session_status(
        self, name: str, status: Mapping[str, Any], namespace: str | None = None
    ) -> Json:
        path = self.sessions_path(name, status=True, namespace=namespace)
        result: Json = await self.call("PATCH", path, {"status": dict(status)}, MERGE_PATCH)
        return result

    async def delete_session(self, name: str, namespace: str | None = None) -> bool:
        """Delete (the finalizer then cleans storage); False if it was already gone."""
        try:
            await self.call("DELETE", self.sessions_path(name, namespace=namespace))
        except KubeNotFound:
            return False
        return True

    # --- Jobs ---

    def jobs_path(self, name: str | None = None, namespace: str | None = None) -> str:
        path = f"/apis/batch/v1/namespaces/{namespace or self.namespace}/jobs"
        return path + (f"/{name}" if name else "")

    async def create_job(self, body: Mapping[str, Any]) -> Json:
        namespace = body.get("metadata", {}).get("namespace")
        result: Json = await self.call("POST", self.jobs_path(namespace=namespace), dict(body))
        return result

    async def get_job(self, name: str, namespace: str | None = None) -> Json | None:
        try:
            result: Json = await self.call("GET", self.jobs_path(name, namespace))
        except KubeNotFound:
            return None
        return result

    async def list_jobs(self, label_selector: str, namespace: str | None = None) -> list[Json]:
        query = [("labelSelector", label_selector)]
        result = await self.call("GET", self.jobs_path(namespace=namespace), query=query)
        return list(result.get("items", []))

    async def delete_job(self, name: str, namespace: str | None = None) -> bool:
        """Delete a Job and, before it goes, its pods (foreground): once `get_job` finds
        nothing, nothing of it runs any more. False if it was already gone."""
        body = {"propagationPolicy": "Foreground"}
        try:
            await self.call("DELETE", self.jobs_path(name, namespace), body)
        except KubeNotFound:
            return False
        return True
