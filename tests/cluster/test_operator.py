"""The operator, installed by the chart, reconciling RecordingSessions in a real API server.

Everything runs as the chart deploys it, on the suite's real node (node.py): storage, ingest,
api and the operator (`tapedeck operator`, kopf) in the service image, the operator and the
api authenticating with the tokens kubelet mounts for the chart's ServiceAccounts (so the
chart's RBAC is all they have), the operator's compile Jobs run by the real job controller on
the compile image, reaching storage through its Service and cluster DNS. Media goes in through
the ingest WebSocket and the MP4 comes out of the api. A session the api made gets a follower
Job while it records (compiler/follow.py), which then compiles instead of a compile Job.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from cluster.controlplane import ControlPlane
from cluster.helpers import (
    api_token,
    create_recording_session,
    delete_namespace,
    pod_ip,
    pods,
    restarts,
    wait_until,
)
from cluster.node import RealNode, dump, install
from media import make_garbage, packet_digest
from tapedeck.ingest.uploader import upload_track

NS = "flow"
RS = f"/apis/tapedeck.io/v1alpha1/namespaces/{NS}/recordingsessions"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
T0 = 1_760_000_000_000.0


class Release:
    def __init__(self, cluster: ControlPlane, node: RealNode) -> None:
        self.cluster, self.node = cluster, node
        self.api = f"http://{pod_ip(cluster, NS, 'api')}:8080"
        self.ws = f"ws://{pod_ip(cluster, NS, 'ingest')}:8080"
        # The chart's default: /api wants the token it generated into the release's Secret.
        token = api_token(cluster, NS)
        self.http = httpx.Client(
            base_url=self.api, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def dump(self) -> str:
        return dump(self.node, NS)

    def record(self, video: bytes, audio: bytes | None, *, via_api: bool) -> str:
        """A finished session: created by the api (which makes its resource) or by ingest."""

        async def go() -> str:
            session_id, token = None, None
            if via_api:
                created = self.http.post("/api/sessions").json()
                session_id, token = created["id"], created["uploadToken"]
            first = await upload_track(
                self.ws,
                "video",
                video,
                session_id=session_id,
                token=token,
                started_at=T0,
                frame_bytes=64 * 1024,
            )
            if audio is not None:
                await upload_track(
                    self.ws,
                    "audio",
                    audio,
                    session_id=first.session_id,
                    token=token or first.upload_token,
                    mime_type="audio/webm;codecs=opus",
                    started_at=T0,
                    frame_bytes=16 * 1024,
                )
            return first.session_id

        return asyncio.run(go())

    def resource(self, name: str) -> dict[str, Any] | None:
        status, _ = self.cluster.raw("GET", f"{RS}/{name}")
        return self.cluster.request("GET", f"{RS}/{name}") if status == 200 else None

    def wait_phase(self, name: str, phases: set[str], timeout: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            got = self.resource(name)
            return got if got and got.get("status", {}).get("phase") in phases else None

        try:
            result: dict[str, Any] = wait_until(reached, timeout, f"{name} in {phases}", 0.5)
        except TimeoutError as err:
            raise AssertionError(f"{err}\n{self.resource(name)}\n{self.dump()}") from None
        return result

    def finished_pods(self, job: dict[str, Any], count: int = 1) -> list[dict[str, Any]]:
        """The Job's pods, once `count` of them ended (the operator may see the outcome in
        storage before the node reports it)."""

        def ended() -> list[dict[str, Any]] | None:
            found = pods(self.cluster, NS, f"job-name={job['metadata']['name']}")
            done = [p for p in found if p["status"].get("phase") in ("Succeeded", "Failed")]
            return found if len(done) >= count else None

        result: list[dict[str, Any]] = wait_until(ended, 60, "the compile pods to end")
        return result

    def delete_all(self) -> None:
        """Resources go while the operator runs: their finalizer cleans storage."""
        self.cluster.raw("DELETE", RS)
        wait_until(
            lambda: not self.cluster.request("GET", RS)["items"], 60, "the resources to go", 0.5
        )

    def jobs_of(self, name: str, component: str = "compile") -> list[dict[str, Any]]:
        """The resource's compile Jobs (component `follow`: its follower Jobs)."""
        return [
            j
            for j in self.cluster.request("GET", JOBS)["items"]
            if any(o["name"] == name for o in j["metadata"].get("ownerReferences", []))
            and ("tapedeck.io/follower" in j["metadata"]["labels"]) == (component == "follow")
        ]

    def new_session(self) -> tuple[str, str]:
        """A session made by the api (which makes its resource): id and upload token."""
        created = self.http.post("/api/sessions").json()
        return created["id"], created["uploadToken"]

    def follower_running(self, session_id: str) -> dict[str, Any]:
        """The session's follower Job, once its pod runs."""

        def running() -> dict[str, Any] | None:
            jobs = self.jobs_of(session_id, "follow")
            return jobs[0] if jobs and (jobs[0].get("status") or {}).get("ready") else None

        try:
            found: dict[str, Any] = wait_until(running, 180, "the follower's pod to run", 0.5)
        except TimeoutError as err:
            raise AssertionError(
                f"{err}\n{self.jobs_of(session_id, 'follow')}\n{self.dump()}"
            ) from None
        return found

    def record_live(self, session_id: str, token: str, video: bytes, audio: bytes) -> None:
        """Both tracks at once, as a browser sends them."""

        async def go() -> None:
            await asyncio.gather(
                upload_track(
                    self.ws,
                    "video",
                    video,
                    session_id=session_id,
                    token=token,
                    started_at=T0,
                    frame_bytes=64 * 1024,
                ),
                upload_track(
                    self.ws,
                    "audio",
                    audio,
                    session_id=session_id,
                    token=token,
                    mime_type="audio/webm;codecs=opus",
                    started_at=T0,
                    frame_bytes=16 * 1024,
                ),
            )

        asyncio.run(go())

    def download(self, session_id: str, where: Path) -> Path:
        reply = self.http.get(f"/api/download/{session_id}")
        assert reply.status_code == 200, reply.text
        where.write_bytes(reply.content)
        return where


@pytest.fixture(scope="module")
def release(real_node: RealNode) -> Iterator[Release]:
    cluster = real_node.cluster
    try:
        out = install(
            real_node,
            NS,
            "--set=ingest.replicas=1,api.replicas=1",
            # Sweep (TTL) and progress every second instead of every 30 s.
            "--set-string=config.extraEnv.TAPEDECK_SWEEP_INTERVAL=1s",
        )
        assert "STATUS: deployed" in out, out + dump(real_node, NS)
        # The operator is up once kopf serves its liveness endpoint.
        wait_until(
            lambda: "Ready" in str(pods(cluster, NS, "app.kubernetes.io/component=operator")),
            60,
            "the operator",
        )
        release = Release(cluster, real_node)
        yield release
        release.delete_all()
    finally:
        real_node.helm("uninstall", "tapedeck", f"--namespace={NS}", "--timeout=120s", check=False)
        delete_namespace(cluster, NS, timeout=120)


def test_kubectl_apply_compiles_a_stored_session(
    release: Release, h264_webm: Path, opus_webm: Path
) -> None:
    session_id = release.record(h264_webm.read_bytes(), opus_webm.read_bytes(), via_api=False)
    assert release.resource(session_id) is None  # ingest made the session, not a resource
    create_recording_session(release.cluster, NS, session_id, compile=True)
    done = release.wait_phase(session_id, {"Ready", "Failed"})
    assert done["status"]["phase"] == "Ready", done["status"]

    [job] = release.jobs_of(session_id)
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "RecordingSession" and owner["controller"] is True
    compile_pods = release.finished_pods(job)
    assert [p["status"]["phase"] for p in compile_pods] == ["Succeeded"]
    wait_until(
        lambda: (
            release.cluster.request("GET", f"{JOBS}/{job['metadata']['name']}")["status"].get(
                "succeeded"
            )
            == 1
        ),
        30,
        "the job controller to count the success",
    )
    terminated = compile_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0

    reply = release.http.get(f"/api/download/{session_id}")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(reply.content)) as mp4:
        kinds = sorted(s.type for s in mp4.streams)
        assert kinds == ["audio", "video"]
        assert mp4.streams.video[0].codec_context.name == "h264"
        assert mp4.streams.audio[0].codec_context.name == "aac"

    # The operator's Events made it (its Role allows creating them).
    events = release.cluster.request(
        "GET", f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name={session_id}"
    )["items"]
    assert events, "no Events for the resource"

    table = release.cluster.request(
        "GET", RS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    names = [c["name"] for c in table["columnDefinitions"]]
    row = next(r for r in table["rows"] if r["cells"][0] == session_id)
    assert row["cells"][names.index("Phase")] == "Ready"
    assert row["cells"][names.index("Size")]


def test_the_api_compiles_through_the_operator(release: Release, h264_webm: Path) -> None:
    session_id = release.record(h264_webm.read_bytes(), None, via_api=True)
    accepted = release.http.post(f"/api/compile-video/{session_id}")
    assert accepted.status_code == 202, accepted.text
    resource = release.resource(session_id)
    assert resource is not None and resource["spec"]["compile"] is True
    release.wait_phase(session_id, {"Ready"})
    session = release.http.get(f"/api/sessions/{session_id}").json()
    assert session["state"] == "ready", session
    assert release.http.get(f"/api/download/{session_id}").status_code == 200


def test_a_failed_compile_fails_once(release: Release, tmp_path: Path) -> None:
    garbage = make_garbage(tmp_path / "garbage.webm").read_bytes()
    # Made by ingest, so never followed: the one-shot compile Job is what this is about.
    session_id = release.record(garbage, None, via_api=False)
    create_recording_session(release.cluster, NS, session_id, compile=True)
    failed = release.wait_phase(session_id, {"Failed"})
    assert failed["status"].get("message"), failed["status"]
    [job] = release.jobs_of(session_id)
    # Exit code 1 (a compile that failed on its input) fails the Job at once: one pod only.
    compile_pods = release.finished_pods(job)
    time.sleep(2)  # long enough for a retry to have been made, were there one
    assert len(pods(release.cluster, NS, f"job-name={job['metadata']['name']}")) == 1
    state = compile_pods[0]["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == 1
    assert release.http.get(f"/api/download/{session_id}").status_code == 409


def test_a_followed_recording_compiles_in_its_follower(
    release: Release, h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    """Recorded through ingest while its follower Job runs, then compiled: Ready, with the
    same packets as a one-shot compile Job makes of the same tracks, and no compile Job."""
    video, audio = h264_webm.read_bytes(), opus_webm.read_bytes()
    session_id, token = release.new_session()
    follower = release.follower_running(session_id)
    assert follower["metadata"]["name"] == f"tapedeck-{session_id}-follow"
    container = follower["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["follow", session_id]
    release.record_live(session_id, token, video, audio)
    assert release.http.post(f"/api/compile-video/{session_id}").status_code == 202
    done = release.wait_phase(session_id, {"Ready", "Failed"})
    assert done["status"]["phase"] == "Ready", done["status"]
    assert done["status"]["job"]["name"] == follower["metadata"]["name"], done["status"]
    assert release.jobs_of(session_id) == [], "a compile Job was made for a followed session"
    [pod] = release.finished_pods(follower)
    assert pod["status"]["phase"] == "Succeeded", release.dump()
    followed = release.download(session_id, tmp_path / "followed.mp4")

    # The same tracks, never followed (ingest made the session), compiled by a Job.
    other = release.record(video, audio, via_api=False)
    create_recording_session(release.cluster, NS, other, compile=True)
    assert release.wait_phase(other, {"Ready", "Failed"})["status"]["phase"] == "Ready"
    assert len(release.jobs_of(other)) == 1 and release.jobs_of(other, "follow") == []
    one_shot = release.download(other, tmp_path / "one-shot.mp4")
    assert packet_digest(followed) == packet_digest(one_shot)


def test_a_killed_follower_is_replaced_by_the_one_shot_job(
    release: Release, h264_webm: Path, opus_webm: Path
) -> None:
    session_id, token = release.new_session()
    follower = release.follower_running(session_id)
    release.record_live(session_id, token, h264_webm.read_bytes(), opus_webm.read_bytes())
    name = follower["metadata"]["name"]
    [pod] = pods(release.cluster, NS, f"job-name={name}")
    release.cluster.request("DELETE", f"/api/v1/namespaces/{NS}/pods/{pod['metadata']['name']}")
    wait_until(
        lambda: job_failed(release.cluster.request("GET", f"{JOBS}/{name}")),
        120,
        "the follower Job to fail",
        0.5,
    )
    assert release.http.post(f"/api/compile-video/{session_id}").status_code == 202
    done = release.wait_phase(session_id, {"Ready", "Failed"})
    assert done["status"]["phase"] == "Ready", done["status"]
    [job] = release.jobs_of(session_id)
    assert done["status"]["job"]["name"] == job["metadata"]["name"]
    assert release.http.get(f"/api/download/{session_id}").status_code == 200


def job_failed(job: dict[str, Any]) -> bool:
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Failed" and c["status"] == "True" for c in conditions)


def test_an_expired_session_goes(release: Release, h264_webm: Path) -> None:
    session_id = release.record(h264_webm.read_bytes(), None, via_api=False)
    create_recording_session(release.cluster, NS, session_id, ttl="3s")
    try:
        # Up to a minute more than the TTL: the sweep timer that deletes the resource is still
        # running when kopf handles the deletion, and kopf re-checks a running timer only every
        # settings.background.cancellation_polling (60 s by default) before it drops the
        # finalizer. Seen here; the operator could lower that setting.
        wait_until(lambda: release.resource(session_id) is None, 100, "the resource to go", 0.5)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{release.resource(session_id)}\n{release.dump()}") from None
    assert release.http.get(f"/api/sessions/{session_id}").status_code == 404


def test_deleting_the_resource_deletes_the_data(release: Release, h264_webm: Path) -> None:
    session_id = release.record(h264_webm.read_bytes(), None, via_api=True)
    wait_until(lambda: release.resource(session_id), 30, "the api's resource")
    assert release.http.get(f"/api/sessions/{session_id}").status_code == 200
    release.cluster.request("DELETE", f"{RS}/{session_id}")
    wait_until(lambda: release.resource(session_id) is None, 60, "the finalizer", 0.5)
    assert release.http.get(f"/api/sessions/{session_id}").status_code == 404


def test_nothing_restarted_and_nothing_was_forbidden(release: Release) -> None:
    assert set(restarts(release.cluster, NS).values()) <= {0}, release.dump()
    operator = next(
        p["metadata"]["name"]
        for p in pods(release.cluster, NS, "app.kubernetes.io/component=operator")
    )
    log = release.node.pod_log(NS, operator, "operator")
    assert "forbidden" not in log.lower(), log[-3000:]
