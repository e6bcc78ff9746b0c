"""Compile requests against the emulated cluster: one Job per request, whatever happens."""

from __future__ import annotations

from typing import Any

from operator_harness import (
    NS,
    Cluster,
    apply,
    events,
    eventually,
    jobs,
    record,
    resource,
    running_operator,
    status_of,
)
from tapedeck._proto import storage_pb2 as pb
from tapedeck.cluster.kube import Kube
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck_operator._context import Context
from tapedeck_operator.jobs import build_job, job_name

SID = "0c136489-c0ad-4ddb-856c-adf166df948c"


async def test_compile_request_makes_one_job(
    k8s: Cluster, kube: Kube, storage: StorageClient, settings: Settings, operator: Context
) -> None:
    await record(storage, SID, {"video": b"v" * 1000})
    created = await apply(
        kube, "interview", {"sessionId": SID, "compile": True, "output": {"crf": 30}}
    )

    job = (await eventually(lambda: jobs(k8s), "the compile Job"))[0]
    name = job_name(SID, 0)
    assert job["metadata"]["name"] == name
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "tapedeck.io/v1alpha1",
            "kind": "RecordingSession",
            "name": "interview",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    spec = job["spec"]
    assert spec["backoffLimit"] == settings.compile_max_attempts - 1
    assert spec["activeDeadlineSeconds"] == settings.compile_timeout.total_seconds()
    assert spec["ttlSecondsAfterFinished"] == settings.compile_job_ttl.total_seconds()
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "tapedeck-compile:test"
    assert container["command"] == ["tapedeck"]
    assert container["args"][:2] == ["compile", SID]
    assert container["args"][container["args"].index("--crf") + 1] == "30"
    assert {"name": "TAPEDECK_STORAGE_ADDR", "value": settings.storage_addr} in container["env"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert job == build_job(created, SID, 0, _output(crf=30), settings) | {
        "metadata": job["metadata"]
    }

    status = await eventually(
        lambda: (s := status_of(k8s, "interview")).get("job") and s, "status.job"
    )
    assert status["job"]["name"] == name and status["compileRequest"] == 0
    assert status["phase"] == "Queued" and status["sessionId"] == SID
    assert (await storage.get_session(SID)).state == pb.SESSION_STATE_QUEUED
    labels = resource(k8s, "interview")["metadata"]["labels"]  # type: ignore[index]
    assert labels["tapedeck.io/session-id"] == SID
    await eventually(
        lambda: {"JobCreated", "CompileQueued"} <= {e["reason"] for e in events(k8s)},
        "the JobCreated and CompileQueued events",
    )

    # Repeating the request (and changing something else) makes no second Job.
    await kube.patch_session("interview", {"spec": {"compile": True, "ttl": "2h"}})
    await eventually(lambda: status_of(k8s, "interview").get("observedGeneration") == 2, "gen 2")
    assert [j["metadata"]["name"] for j in jobs(k8s)] == [name]


async def test_restart_never_makes_a_second_job(
    k8s: Cluster, kube: Kube, storage: StorageClient, settings: Settings
) -> None:
    await record(storage, SID, {"video": b"v" * 1000})
    async with running_operator(settings, kube):
        await apply(kube, "interview", {"sessionId": SID, "compile": True})
        await eventually(lambda: status_of(k8s, "interview").get("job"), "status.job")
    async with running_operator(settings, kube):
        await kube.patch_session("interview", {"spec": {"ttl": "3h"}})
        await eventually(
            lambda: status_of(k8s, "interview").get("observedGeneration") == 2, "gen 2"
        )
    assert [j["metadata"]["name"] for j in jobs(k8s)] == [job_name(SID, 0)]


async def test_restart_adopts_the_job_of_a_request_it_did_not_record(
    k8s: Cluster, kube: Kube, storage: StorageClient, settings: Settings
) -> None:
    """The operator created the Job and died before it wrote status: the Job is adopted."""
    await record(storage, SID, {"video": b"v" * 1000})
    created = await apply(kube, "interview", {"sessionId": SID, "compile": True})
    await storage.update_session(
        pb.UpdateSessionRequest(session_id=SID, state=pb.SESSION_STATE_QUEUED)
    )
    await kube.create_job(build_job(created, SID, 0, _output(), settings))
    async with running_operator(settings, kube):
        status = await eventually(lambda: status_of(k8s, "interview").get("job"), "status.job")
    assert status["name"] == job_name(SID, 0)
    assert len(jobs(k8s)) == 1


async def test_a_new_request_after_a_failure_makes_the_next_job(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await record(storage, SID, {"video": b"v" * 1000})
    await apply(kube, "interview", {"sessionId": SID, "compile": True})
    await eventually(lambda: status_of(k8s, "interview").get("job"), "the first Job")
    await storage.update_session(
        pb.UpdateSessionRequest(
            session_id=SID, state=pb.SESSION_STATE_FAILED, error="Invalid data found"
        )
    )
    await kube.patch_session("interview", {"spec": {"compileRequest": 1}})
    await eventually(lambda: len(jobs(k8s)) == 2, "the second Job")
    assert sorted(j["metadata"]["name"] for j in jobs(k8s)) == [job_name(SID, 0), job_name(SID, 1)]
    status = await eventually(
        lambda: (s := status_of(k8s, "interview")).get("compileRequest") == 1 and s, "request 1"
    )
    assert status["job"]["name"] == job_name(SID, 1)


async def test_invalid_spec_is_reported(k8s: Cluster, kube: Kube, operator: Context) -> None:
    await apply(kube, "broken", {"sessionId": "Not A Session", "compile": True})
    status = await eventually(
        lambda: (s := status_of(k8s, "broken")).get("phase") == "Invalid" and s, "Invalid"
    )
    assert status["message"].startswith("spec.sessionId")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    await eventually(
        lambda: any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events(k8s)),
        "a Warning event",
    )
    assert jobs(k8s) == []


def _output(**given: Any) -> Any:
    from tapedeck.compiler.plan import OutputOptions

    return OutputOptions(**given)


assert NS  # the namespace every object of these tests lives in
