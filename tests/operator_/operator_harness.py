"""The operator in-process against kmock's Kubernetes emulator and a real storage service.

kmock's emulator keeps objects as plain JSON: it has no uids, resource versions, generations
or generated names. `Cluster` adds those (as an API server does), so kopf's optimistic
concurrency, the owner references and `observedGeneration` behave as they would for real.
What it still does not do — schema validation and defaulting, CEL rules, garbage collection
of owned Jobs, running Jobs — is left to the real-API-server suite; here the tests play the
Job controller by patching a Job's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import kopf
import pytest
import yaml
from kmock._internal import dicts as kmock_dicts

from harness import free_port
from storage_fixtures import storage_serving
from tapedeck.cluster.kube import MERGE_PATCH, Kube
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient

# Timers' intervals are fixed when kopf loads the handlers: make them short for the tests,
# without leaking the setting into the rest of the suite.
_saved = os.environ.get("TAPEDECK_SWEEP_INTERVAL")
os.environ["TAPEDECK_SWEEP_INTERVAL"] = "0.5s"
import tapedeck_operator.handlers  # noqa: E402, F401 -- registers the handlers

if _saved is None:
    del os.environ["TAPEDECK_SWEEP_INTERVAL"]
else:
    os.environ["TAPEDECK_SWEEP_INTERVAL"] = _saved

from tapedeck_operator._context import MEMO_KEY, Context  # noqa: E402

CRD = Path(__file__).parents[2] / "charts/tapedeck/crds/recordingsessions.tapedeck.io.yaml"
NS = "tapedeck"
SESSIONS = "tapedeck.io/v1alpha1/recordingsessions"
JOBS = "batch/v1/jobs"
EVENTS = "v1/events"

_server: dict[str, str] = {}


@kopf.on.login()
def login_to_emulator(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=_server["url"], default_namespace=NS)


_versions = itertools.count(1)
_latest = [0]


def _next_version() -> str:
    _latest[0] = next(_versions)
    return str(_latest[0])


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster(kmock.KubernetesEmulator):
    """kmock's emulator plus what an API server stamps on objects, and list-then-watch by
    resource version (the emulator's watch restarts from "now", so an event between a list
    and its watch would be lost, and kopf would wait for it forever)."""

    async def _serve_list(self, request: kmock.Request) -> Any:
        result = await super()._serve_list(request)
        result["metadata"]["resourceVersion"] = str(_latest[0])
        return result

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        since = int(request.params.get("resourceVersion") or 0)
        if not since:
            async for item in super()._serve_watch(request):
                yield item
            return
        yield b""
        bus = self._buses[request.resource]
        marker = await bus.mark()
        try:
            seen: dict[tuple[str | None, str], int] = {}
            for (res, namespace, name), obj in list(self.objects.items()):
                if res != request.resource or obj.deleted:
                    continue
                if request.namespace is not None and namespace != request.namespace:
                    continue
                raw = obj.raw
                version = int(raw.get("metadata", {}).get("resourceVersion") or 0)
                if version > since:
                    seen[(namespace, name)] = version
                    yield {"type": "MODIFIED", "object": raw}
            async for event in bus.stream(since=marker):
                meta = event.get("object", {}).get("metadata", {})
                if request.namespace is not None and meta.get("namespace") != request.namespace:
                    continue
                version = int(meta.get("resourceVersion") or 0)
                key = (meta.get("namespace"), meta.get("name"))
                if event.get("type") != "DELETED" and version <= seen.get(key, since):
                    continue
                yield event
        finally:
            await bus.unmark(marker)

    refuse: Callable[[kmock.Request], bool] | None = None
    """Requests answered 503 and not applied, as by an API server that is away."""

    async def _handle(self, request: kmock.Request) -> Any:
        if self.refuse is not None and self.refuse(request):
            raise kmock.KubernetesError(503, "ServiceUnavailable", "the API server is away")
        if request.resource is not None and request.data is not None:
            if request.action == kmock.action.CREATE:
                self._created(request)
            elif request.action == kmock.action.UPDATE:
                self._patched(request)
        return await super()._handle(request)

    def _current(self, request: kmock.Request) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key in self.objects and not self.objects[key].deleted:
            return self.objects[key].raw
        return None

    def _created(self, request: kmock.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if "name" not in meta and "generateName" in meta:
            meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:8]}"
        meta.setdefault("namespace", request.namespace)
        meta.update(
            uid=str(uuid.uuid4()),
            resourceVersion=_next_version(),
            generation=1,
            creationTimestamp=_now(),
        )

    def _patched(self, request: kmock.Request) -> None:
        current = self._current(request)
        if current is None:
            return  # the emulator answers 404
        version = _next_version()
        meta = current.get("metadata", {})
        if isinstance(request.data, list):  # JSON patch: honour kopf's resourceVersion test
            for op in request.data:
                if op.get("op") == "test" and op.get("path") == "/metadata/resourceVersion":
                    if op.get("value") != meta.get("resourceVersion"):
                        raise kmock.KubernetesError(422, "Invalid", "resourceVersion changed")
            touches_spec = any(str(op.get("path", "")).startswith("/spec") for op in request.data)
            request.data.append(
                {"op": "replace", "path": "/metadata/resourceVersion", "value": version}
            )
            if touches_spec:
                request.data.append(
                    {
                        "op": "replace",
                        "path": "/metadata/generation",
                        "value": meta["generation"] + 1,
                    }
                )
            return
        if request.subresource == "status":  # the status subresource changes status only
            for key in list(request.data):
                if key != "status":
                    del request.data[key]
        elif "status" in request.data and request.resource == kmock.resource(SESSIONS):
            del request.data["status"]  # …and the main resource everything else
        new_meta = request.data.setdefault("metadata", {})
        new_meta["resourceVersion"] = version
        if "spec" in request.data:
            spec = kmock_dicts.patch_dict(current.get("spec") or {}, request.data["spec"])
            if spec != current.get("spec"):
                new_meta["generation"] = meta.get("generation", 1) + 1


def crd_resource_info() -> kmock.ResourceInfo:
    crd = yaml.safe_load(CRD.read_text())
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    return kmock.ResourceInfo(
        namespaced=crd["spec"]["scope"] == "Namespaced",
        kind=names["kind"],
        singular=names["singular"],
        shortnames=set(names["shortNames"]),
        categories=set(names["categories"]),
        subresources=set(version.get("subresources", {})),
        verbs={"create", "delete", "get", "list", "patch", "update", "watch"},
    )


@pytest.fixture
async def k8s() -> AsyncIterator[Cluster]:
    async with Cluster() as cluster, kmock.Server(cluster):
        cluster.resources.load_bundled()
        cluster.resources[SESSIONS] = crd_resource_info()
        _server["url"] = str(cluster.url).rstrip("/")
        yield cluster


@pytest.fixture
def kube(k8s: Cluster) -> Kube:
    return Kube.for_server(str(k8s.url), NS)


# --- storage ---


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        storage_addr=f"127.0.0.1:{free_port()}",
        namespace=NS,
        webhook_poll_interval="0.2s",  # type: ignore[arg-type]
        sweep_interval="0.5s",  # type: ignore[arg-type]
        compile_image="tapedeck-compile:test",
    )


@pytest.fixture
async def storage(settings: Settings) -> AsyncIterator[StorageClient]:
    """The storage server of the operator's settings (the plain `storage` fixture has its own)."""
    # As in a cluster: storage keeps the outbox the operator turns into Kubernetes Events.
    async with storage_serving(settings.model_copy(update={"mode": "cluster"})) as client:
        yield client


async def record(storage: StorageClient, session_id: str, tracks: dict[str, bytes]) -> None:
    """A finished recording in storage: `recorded`, with these tracks."""
    await storage.create_session(session_id)
    for name, data in tracks.items():
        await write_track(storage, session_id, name, data)


async def write_track(storage: StorageClient, session_id: str, name: str, data: bytes) -> None:
    """One whole track of an existing session, finished."""
    mime = "audio/webm;codecs=opus" if name == "audio" else "video/webm;codecs=h264"
    writer = await storage.open_writer(session_id, name, mime, time.time() * 1000)
    await writer.send(0, data, finish=True)
    async for ack in writer.acks():
        if ack.finished:
            break
    writer.cancel()


# --- the operator ---


@contextlib.asynccontextmanager
async def running_operator(settings: Settings, kube: Kube) -> AsyncIterator[Context]:
    """kopf as `tapedeck operator -n tapedeck` runs it, in a thread with its own event loop
    (as kopf's own KopfRunner does): on exit kopf cancels every task its loop has, which
    must not include the emulator's and the storage server's."""
    ctx = Context(
        settings.model_copy(update={"mode": "cluster"}), StorageClient(settings.storage_addr), kube
    )
    operator_settings = kopf.OperatorSettings()
    operator_settings.queueing.idle_timeout = 1.0
    operator_settings.queueing.exit_timeout = 1.0
    stop, ready = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(
                kopf.operator(
                    settings=operator_settings,
                    standalone=True,
                    namespaces=[NS],
                    memo=kopf.Memo({MEMO_KEY: ctx}),
                    stop_flag=stop,
                    ready_flag=ready,
                )
            )
        except BaseException as err:  # reported by the test, not lost in the thread
            failure.append(err)
            ready.set()

    thread = threading.Thread(target=run, name="kopf", daemon=True)
    thread.start()
    try:
        assert await asyncio.to_thread(ready.wait, 15), "the operator did not start"
        assert not failure, failure
        yield ctx
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 20)
        assert not thread.is_alive(), "the operator did not stop"
    assert not failure, failure


@pytest.fixture
async def operator(
    settings: Settings, kube: Kube, storage: StorageClient
) -> AsyncIterator[Context]:
    async with running_operator(settings, kube) as ctx:
        yield ctx


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], what: str, timeout: float = 15.0
) -> Any:
    """Poll until `check` returns something truthy (not an assertion by sleeping)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except (KeyError, LookupError, ValueError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def jobs(k8s: Cluster, followers: bool = False) -> list[dict[str, Any]]:
    """The compile Jobs (`followers`: the follower Jobs instead)."""
    return [
        obj.raw
        for (resource, _, _), obj in k8s.objects.items()
        if resource == kmock.resource(JOBS)
        and not obj.deleted
        and ("tapedeck.io/follower" in obj.raw["metadata"]["labels"]) == followers
    ]


def events(k8s: Cluster) -> list[dict[str, Any]]:
    return [
        obj.raw
        for (resource, _, _), obj in k8s.objects.items()
        if resource == kmock.resource(EVENTS) and not obj.deleted
    ]


def resource(k8s: Cluster, name: str) -> dict[str, Any] | None:
    key = (kmock.resource(SESSIONS), NS, name)
    if key in k8s.objects and not k8s.objects[key].deleted:
        return k8s.objects[key].raw
    return None


def status_of(k8s: Cluster, name: str) -> dict[str, Any]:
    found = resource(k8s, name)
    return dict((found or {}).get("status") or {})


async def apply(kube: Kube, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return await kube.create_session(
        {
            "apiVersion": "tapedeck.io/v1alpha1",
            "kind": "RecordingSession",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        }
    )


async def finish_job(
    kube: Kube, name: str, succeeded: bool, reason: str = "", message: str = ""
) -> None:
    """Play the Job controller: the Job's pod ended."""
    condition = {
        "type": "Complete" if succeeded else "Failed",
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
    }
    status = {
        "startTime": _now(),
        "completionTime": _now() if succeeded else None,
        "succeeded" if succeeded else "failed": 1,
        "conditions": [condition],
    }
    await kube.call("PATCH", kube.jobs_path(name) + "/status", {"status": status}, MERGE_PATCH)
