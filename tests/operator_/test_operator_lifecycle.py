"""Job outcomes, TTL and the finalizer, against the emulated cluster and real storage; the
compile pod's command really runs, as a local process."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import av
import grpc
import pytest

from operator_harness import (
    NS,
    Cluster,
    apply,
    events,
    eventually,
    finish_job,
    jobs,
    record,
    resource,
    status_of,
)
from tapedeck._proto import storage_pb2 as pb
from tapedeck.cluster.kube import Kube
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient, StorageError
from tapedeck_operator._context import Context

SID = "5b0f3f0e-4d6a-4a59-a0a3-6c1b7e3c9f10"


async def run_pod(job: dict[str, Any], storage_addr: str) -> int:
    """The Job's container as a local process: its command, args and env, with the storage
    address pointed at the test's server (and this venv's `tapedeck` on PATH)."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    env["TAPEDECK_STORAGE_ADDR"] = storage_addr
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = env["HOME"] = os.environ.get("TMPDIR", "/tmp")
    process = await asyncio.create_subprocess_exec(
        *container["command"], *container["args"], env=env
    )
    return await asyncio.wait_for(process.wait(), 120)


async def test_succeeded_job_makes_the_session_ready(
    k8s: Cluster,
    kube: Kube,
    storage: StorageClient,
    settings: Settings,
    operator: Context,
    h264_webm: Path,
    opus_webm: Path,
    tmp_path: Path,
) -> None:
    await record(storage, SID, {"video": h264_webm.read_bytes(), "audio": opus_webm.read_bytes()})
    await apply(kube, "talk", {"sessionId": SID, "compile": True, "output": {"hls": True}})
    job = (await eventually(lambda: jobs(k8s), "the compile Job"))[0]

    assert await run_pod(job, settings.storage_addr) == 0
    session = await storage.get_session(SID)
    assert session.state == pb.SESSION_STATE_READY and session.output.size > 0
    # The Job writes the named outputs too, and HLS when `spec.output.hls` asks (4 s < 10 min).
    named = {o.name for o in session.named_outputs}
    assert {"poster.jpg", "storyboard.jpg", "storyboard.vtt", "hls.m3u8", "hls-init.mp4"} <= named
    mp4 = tmp_path / "out.mp4"
    await storage.download(SID, "output", mp4)
    with av.open(str(mp4)) as container:
        kinds = {s.type for s in container.streams}
        assert kinds == {"video", "audio"}
        assert container.streams.video[0].codec_context.name == "h264"

    await finish_job(kube, job["metadata"]["name"], succeeded=True)
    status = await eventually(
        lambda: (
            (s := status_of(k8s, "talk")).get("phase") == "Ready"
            and s["job"]["phase"] == "Succeeded"
            and s
        ),
        "phase Ready and the Job succeeded",
    )
    assert status["output"]["size"] == session.output.size
    assert status["output"]["videoCodec"] == "h264"
    assert status["job"]["phase"] == "Succeeded" and status["progress"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Recorded": "True",
        "Compiled": "True",
        "Ready": "True",
    }
    await eventually(lambda: "Compiled" in {e["reason"] for e in events(k8s)}, "Compiled event")


async def test_failed_job_reports_the_compile_error(
    k8s: Cluster, kube: Kube, storage: StorageClient, settings: Settings, operator: Context
) -> None:
    await record(storage, SID, {"video": b"this is not a video" * 100})
    await apply(kube, "talk", {"sessionId": SID, "compile": True})
    job = (await eventually(lambda: jobs(k8s), "the compile Job"))[0]

    assert await run_pod(job, settings.storage_addr) == 1  # the Job's FailJob exit code
    error = (await storage.get_session(SID)).error
    assert error

    await finish_job(kube, job["metadata"]["name"], False, "PodFailurePolicy", "exit code 1")
    status = await eventually(
        lambda: (
            (s := status_of(k8s, "talk")).get("phase") == "Failed"
            and s["job"]["phase"] == "Failed"
            and s
        ),
        "phase Failed and the Job failed",
    )
    assert status["message"] == error
    compiled = next(c for c in status["conditions"] if c["type"] == "Compiled")
    assert compiled["status"] == "False" and compiled["reason"] == "CompileFailed"
    assert status["job"]["phase"] == "Failed" and status["job"]["reason"] == "PodFailurePolicy"
    await eventually(
        lambda: any(e["reason"] == "CompileFailed" and e["type"] == "Warning" for e in events(k8s)),
        "a CompileFailed warning",
    )


async def test_a_job_that_dies_without_a_result_fails_the_session(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    """Deadline exceeded, image not pulled, killed: the session must not stay `compiling`."""
    await record(storage, SID, {"video": b"v" * 100})
    await apply(kube, "talk", {"sessionId": SID, "compile": True})
    job = (await eventually(lambda: jobs(k8s), "the compile Job"))[0]
    await storage.update_session(
        pb.UpdateSessionRequest(session_id=SID, state=pb.SESSION_STATE_COMPILING)
    )
    await finish_job(
        kube, job["metadata"]["name"], False, "DeadlineExceeded", "Job was active too long"
    )
    status = await eventually(
        lambda: (s := status_of(k8s, "talk")).get("phase") == "Failed" and s, "phase Failed"
    )
    session = await storage.get_session(SID)
    assert session.state == pb.SESSION_STATE_FAILED
    assert "DeadlineExceeded" in session.error and status["message"] == session.error


async def test_expired_session_is_deleted_with_its_resource(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await apply(kube, "short-lived", {"sessionId": SID, "ttl": "1s"})
    status = await eventually(lambda: status_of(k8s, "short-lived").get("expiresAt"), "expiry")
    assert status
    session = await storage.get_session(SID)  # the operator created it, with the spec's TTL
    assert session.expires_at_ms - session.created_at_ms == 1000
    await eventually(lambda: resource(k8s, "short-lived") is None, "the resource deleted")
    with pytest.raises(StorageError) as err:
        await storage.get_session(SID)
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert "Expiring" in {e["reason"] for e in events(k8s)}  # the operator deletes it


@pytest.mark.parametrize(
    ("ttl", "said"),
    [("100000000d", "at most 3650d"), ("3651d", "at most 3650d"), ("1000000000d", "out of range")],
)
async def test_out_of_range_ttl_is_reported_not_stored(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context, ttl: str, said: str
) -> None:
    """A resource from before the CRD bounded `spec.ttl` (or an API server without the
    schema): the operator says why in status and an Event, and passes nothing to storage."""
    await apply(kube, "forever", {"sessionId": SID, "ttl": ttl})
    status = await eventually(
        lambda: (s := status_of(k8s, "forever")).get("phase") == "Invalid" and s, "Invalid"
    )
    assert status["message"].startswith("spec.ttl") and said in status["message"], status
    await eventually(
        lambda: any(
            e["reason"] == "InvalidSpec" and e["type"] == "Warning" and said in e["message"]
            for e in events(k8s)
        ),
        "a Warning event",
    )
    with pytest.raises(StorageError) as err:
        await storage.get_session(SID)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


async def test_deleting_the_resource_deletes_the_data(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await record(storage, SID, {"video": b"v" * 100})
    await apply(kube, "talk", {"sessionId": SID})
    await eventually(
        lambda: "tapedeck.io/cleanup" in (resource(k8s, "talk") or {})["metadata"]["finalizers"],
        "the finalizer",
    )
    await eventually(lambda: status_of(k8s, "talk").get("phase") == "Recorded", "Recorded")
    assert await kube.delete_session("talk")
    await eventually(lambda: resource(k8s, "talk") is None, "the resource gone")
    released = k8s.objects["tapedeck.io/v1alpha1/recordingsessions", NS, "talk"].history[-2]
    assert not released["metadata"].get("finalizers")
    with pytest.raises(StorageError) as err:
        await storage.get_session(SID)
    assert err.value.code == grpc.StatusCode.NOT_FOUND


async def test_spec_title_names_the_session_and_follows_its_changes(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await apply(kube, "standup", {"sessionId": SID, "title": "Réunion du lundi"})
    await eventually(lambda: status_of(k8s, "standup").get("phase") == "Recording", "Recording")
    assert (await storage.get_session(SID)).title == "Réunion du lundi"
    await kube.patch_session("standup", {"spec": {"title": "  Weekly   sync "}})

    async def renamed() -> bool:
        return (await storage.get_session(SID)).title == "Weekly sync"

    for _ in range(200):
        if await renamed():
            break
        await asyncio.sleep(0.05)
    assert await renamed()
    # A title the CRD's schema would refuse (an API server without it): reported, not stored.
    await kube.patch_session("standup", {"spec": {"title": "bell\x07"}})
    status = await eventually(
        lambda: (s := status_of(k8s, "standup")).get("phase") == "Invalid" and s, "Invalid"
    )
    assert status["message"].startswith("spec.title"), status
    assert (await storage.get_session(SID)).title == "Weekly sync"
