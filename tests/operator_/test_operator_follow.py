"""Follower Jobs against the emulated cluster: one per recording, and never a follower and a
compile Job both compiling (the real job controller runs them in tests/cluster)."""

from __future__ import annotations

from typing import Any

from operator_harness import (
    Cluster,
    apply,
    events,
    eventually,
    finish_job,
    jobs,
    running_operator,
    status_of,
    write_track,
)
from tapedeck._proto import storage_pb2 as pb
from tapedeck.cluster.kube import MERGE_PATCH, Kube
from tapedeck.settings import Settings
from tapedeck.storage.client import StorageClient
from tapedeck_operator._context import Context
from tapedeck_operator.jobs import follower_name, is_follower, job_name

SID = "7d1b0a5e-4f3c-4c9e-9a51-2b8d6f0e3c11"
OTHER = "7d1b0a5e-4f3c-4c9e-9a51-2b8d6f0e3c12"


def followers(k8s: Cluster) -> list[dict[str, Any]]:
    found = jobs(k8s, followers=True)
    assert all(is_follower(j) for j in found)
    return found


def compile_jobs(k8s: Cluster) -> list[dict[str, Any]]:
    found = jobs(k8s)
    assert not any(is_follower(j) for j in found)
    return found


async def run_pod(kube: Kube, name: str) -> None:
    """Play the Job controller: the follower's pod started (its container runs)."""
    status = {"active": 1, "ready": 1, "startTime": "2026-12-05T04:00:00Z"}
    await kube.call("PATCH", kube.jobs_path(name) + "/status", {"status": status}, MERGE_PATCH)


async def recording_with_follower(k8s: Cluster, kube: Kube, storage: StorageClient) -> None:
    """A resource made like the api makes it, its session recording, its follower running,
    then its recording finished."""
    await apply(kube, "talk", {"sessionId": SID})
    [follower] = await eventually(lambda: followers(k8s), "the follower Job")
    assert follower["metadata"]["name"] == follower_name(SID)
    assert follower["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["follow", SID]
    await run_pod(kube, follower_name(SID))
    await write_track(storage, SID, "video", b"v" * 1000)
    await eventually(
        lambda: status_of(k8s, "talk").get("phase") == "Recorded", "the recording to finish"
    )


async def test_a_recording_gets_one_follower_and_it_compiles_the_request(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await recording_with_follower(k8s, kube, storage)
    await eventually(
        lambda: "FollowerCreated" in {e["reason"] for e in events(k8s)}, "FollowerCreated"
    )
    await kube.patch_session("talk", {"spec": {"compile": True}})
    status = await eventually(
        lambda: (s := status_of(k8s, "talk")).get("compileRequest") == 0 and s, "request 0"
    )
    assert status["job"]["name"] == follower_name(SID) and status["job"]["request"] == 0
    assert status["phase"] == "Queued"
    assert (await storage.get_session(SID)).state == pb.SESSION_STATE_QUEUED
    await eventually(
        lambda: "FollowerCompiles" in {e["reason"] for e in events(k8s)}, "FollowerCompiles"
    )
    # The follower compiles (here: storage says so), and no compile Job was made.
    await storage.update_session(
        pb.UpdateSessionRequest(session_id=SID, state=pb.SESSION_STATE_READY)
    )
    await finish_job(kube, follower_name(SID), succeeded=True)
    await eventually(lambda: status_of(k8s, "talk").get("phase") == "Ready", "Ready")
    assert compile_jobs(k8s) == []
    assert len(followers(k8s)) == 1


async def test_a_follower_that_failed_is_replaced_by_the_one_shot_job(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await recording_with_follower(k8s, kube, storage)
    await kube.patch_session("talk", {"spec": {"compile": True}})
    await eventually(
        lambda: (status_of(k8s, "talk").get("job") or {}).get("name") == follower_name(SID),
        "the follower to compile",
    )
    assert compile_jobs(k8s) == []
    await finish_job(kube, follower_name(SID), succeeded=False, reason="OOMKilled")
    [job] = await eventually(lambda: compile_jobs(k8s), "the one-shot compile Job")
    assert job["metadata"]["name"] == job_name(SID, 0)
    status = await eventually(
        lambda: (s := status_of(k8s, "talk")).get("job", {}).get("name") == job_name(SID, 0) and s,
        "status.job to name the compile Job",
    )
    assert status["phase"] == "Queued"  # not failed: the one-shot compile is to run


async def test_a_pending_follower_is_stopped_before_the_compile_job(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    await apply(kube, "talk", {"sessionId": SID})
    await eventually(lambda: followers(k8s), "the follower Job")
    await write_track(storage, SID, "video", b"v" * 1000)
    await kube.patch_session("talk", {"spec": {"compile": True}})  # its pod never started
    [job] = await eventually(lambda: compile_jobs(k8s), "the compile Job")
    assert job["metadata"]["name"] == job_name(SID, 0)
    assert followers(k8s) == []  # deleted before the session was queued


async def test_followers_are_capped_and_can_be_turned_off(
    k8s: Cluster, kube: Kube, storage: StorageClient, settings: Settings
) -> None:
    capped = settings.model_copy(update={"operator_followers_max": 1})
    async with running_operator(capped, kube):
        await apply(kube, "one", {"sessionId": SID})
        await eventually(lambda: followers(k8s), "the first follower")
        await apply(kube, "two", {"sessionId": OTHER})
        await eventually(lambda: status_of(k8s, "two").get("phase") == "Recording", "two")
        await eventually(lambda: status_of(k8s, "two").get("observedGeneration"), "two seen")
    assert [j["metadata"]["name"] for j in followers(k8s)] == [follower_name(SID)]

    off = settings.model_copy(update={"operator_followers_max": 0})
    await finish_job(kube, follower_name(SID), succeeded=True)  # room for one more, but off
    async with running_operator(off, kube):
        await kube.patch_session("two", {"spec": {"title": "seen again"}})
        await eventually(lambda: status_of(k8s, "two").get("observedGeneration") == 2, "gen 2")
    assert [j["metadata"]["name"] for j in followers(k8s)] == [follower_name(SID)]


async def test_a_follower_with_other_output_options_is_stopped_not_trusted(
    k8s: Cluster, kube: Kube, storage: StorageClient, operator: Context
) -> None:
    """The spec's output changed while recording: the running follower would compile with the
    old options (and might settle the session first), so it goes before the compile Job."""
    await recording_with_follower(k8s, kube, storage)
    await kube.patch_session("talk", {"spec": {"compile": True, "output": {"crf": 30}}})
    [job] = await eventually(lambda: compile_jobs(k8s), "the compile Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--crf") + 1] == "30"
    assert followers(k8s) == []
    status = await eventually(
        lambda: (s := status_of(k8s, "talk")).get("compileRequest") == 0 and s, "request 0"
    )
    assert status["job"]["name"] == job_name(SID, 0)
