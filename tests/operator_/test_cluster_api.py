"""The api in cluster mode (TAPEDECK_MODE=cluster), with the operator and real storage: the
HTTP contract stays the embedded one, and sessions become RecordingSession resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import kmock
import pytest

from operator_harness import (
    NS,
    Cluster,
    eventually,
    finish_job,
    jobs,
    record,
    resource,
    status_of,
    write_track,
)
from tapedeck._proto import storage_pb2 as pb
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck.webapp import create_app
from tapedeck_operator._context import Context
from tapedeck_operator.jobs import job_name


@pytest.fixture
async def api(
    k8s: Cluster, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """The api as `tapedeck serve api` runs it in the chart, its kubeconfig pointing at the
    emulator."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
current-context: test
clusters: [{{name: test, cluster: {{server: "{str(k8s.url).rstrip("/")}"}}}}]
users: [{{name: test, user: {{}}}}]
contexts: [{{name: test, context: {{cluster: test, user: test, namespace: {NS}}}}}]
"""
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    app_settings = settings.model_copy(
        update={
            "mode": "cluster",
            "namespace": None,
            "secret_key": "s" * 32,
            "allowed_hosts": ["api"],  # the chart lists its Service names
        }
    )
    app = create_app(app_settings, ("api",))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


async def test_sessions_are_resources_and_compiles_are_jobs(
    api: httpx.AsyncClient, k8s: Cluster, storage: StorageClient, operator: Context
) -> None:
    created = await api.post("/api/sessions")
    assert created.status_code == 201
    sid = created.json()["id"]
    assert resource(k8s, sid)["spec"] == {"sessionId": sid}  # type: ignore[index]
    await eventually(lambda: status_of(k8s, sid).get("phase") == "Recording", "Recording")

    await write_track(storage, sid, "video", b"v" * 500)

    accepted = await api.post(f"/api/compile-video/{sid}")
    assert accepted.status_code == 202 and accepted.json() == {"state": "queued"}
    assert resource(k8s, sid)["spec"]["compile"] is True  # type: ignore[index]
    await eventually(lambda: len(jobs(k8s)) == 1, "the Job")
    again = await api.post(f"/api/compile-video/{sid}")  # idempotent: no second Job
    assert again.json() == {"state": "queued"}

    # The pod failed on its input: storage says so, then the Job does.
    await storage.update_session(
        pb.UpdateSessionRequest(
            session_id=sid, state=pb.SESSION_STATE_FAILED, error="Invalid data found"
        )
    )
    await finish_job(k8s_kube(k8s), job_name(sid, 0), False, "PodFailurePolicy", "exit code 1")
    await eventually(lambda: status_of(k8s, sid).get("phase") == "Failed", "Failed")
    detail = (await api.get(f"/api/sessions/{sid}")).json()
    assert detail["state"] == "failed" and detail["error"] == "Invalid data found"
    assert detail["resource"] == {
        "name": sid,
        "phase": "Failed",
        "job": job_name(sid, 0),
        "message": "Invalid data found",
    }

    # Compiling again is a new request on the resource, and its own Job.
    assert (await api.post(f"/api/compile-video/{sid}")).json() == {"state": "queued"}
    assert resource(k8s, sid)["spec"]["compileRequest"] == 1  # type: ignore[index]
    await eventually(lambda: len(jobs(k8s)) == 2, "the second Job")
    listed = (await api.get("/api/sessions")).json()["items"]
    await eventually(
        lambda: status_of(k8s, sid).get("job", {}).get("name") == job_name(sid, 1), "Job 1"
    )
    assert [item["id"] for item in listed] == [sid]

    deleted = await api.delete(f"/api/sessions/{sid}")
    assert deleted.status_code == 204
    assert (await api.get(f"/api/sessions/{sid}")).status_code == 404
    await eventually(lambda: resource(k8s, sid) is None, "the resource gone (finalizer done)")


async def test_compile_asked_while_the_api_server_is_away_can_be_asked_again(
    api: httpx.AsyncClient, k8s: Cluster, storage: StorageClient, operator: Context
) -> None:
    """The api queues the session in storage, then asks the operator through the resource; if
    that fails (503), the session goes back to `recorded`, so asking again starts the compile
    instead of finding it `queued` with nobody to compile it."""
    sid = (await api.post("/api/sessions")).json()["id"]
    await write_track(storage, sid, "video", b"v" * 500)
    asked: list[kmock.Request] = []

    def asks_compile(request: kmock.Request) -> bool:
        data = request.data
        if (
            request.method == "PATCH"
            and isinstance(data, dict)
            and "compile" in data.get("spec", {})
        ):
            asked.append(request)
            return True
        return False

    k8s.refuse = asks_compile
    refused = await api.post(f"/api/compile-video/{sid}")
    assert refused.status_code == 503, refused.text
    assert len(asked) == 1
    assert (await api.get(f"/api/sessions/{sid}")).json()["state"] == "recorded"
    assert not (resource(k8s, sid) or {}).get("spec", {}).get("compile")

    k8s.refuse = None
    accepted = await api.post(f"/api/compile-video/{sid}")
    assert accepted.status_code == 202 and accepted.json() == {"state": "queued"}
    await eventually(lambda: len(jobs(k8s)) == 1, "the Job")


async def test_embedded_mode_output_is_unchanged(
    settings: Settings, storage: StorageClient, tmp_path: Path
) -> None:
    """No `resource` key outside a cluster: the embedded contract stays as it was."""
    await record(storage, "abcdefgh-embedded", {"video": b"v" * 10})
    app = create_app(
        settings.model_copy(update={"secret_key": "s" * 32, "allowed_hosts": ["api"]}), ("api",)
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        detail = (await client.get("/api/sessions/abcdefgh-embedded")).json()
    assert "resource" not in detail and detail["state"] == "recorded"


def k8s_kube(k8s: Cluster):  # type: ignore[no-untyped-def]
    from tapedeck.cluster.kube import Kube

    return Kube.for_server(str(k8s.url), NS)
