"""The chart on a real node: the images built from docker/Dockerfile, run by kubelet and
containerd with the chart's own security context, reached through Services and cluster DNS.

`installed_chart` installs the chart with its default values plus only the image names.
Media goes in with the protocol client over the ingest Service, the operator compiles it in a
Job on the compile image, and the MP4 comes out of the api Service, checked with ffprobe.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.controlplane import ADMIN_TOKEN
from cluster.helpers import api_token, pods, restarts, wait_until
from cluster.node import InstalledChart, RealNode, dump
from tapedeck.ingest.uploader import upload_track

T0 = 1_760_000_000_000.0
SECURITY_PROBE = """
import os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
try:
    open("/probe", "w")
    root = "writable"
except OSError as err:
    root = type(err).__name__
print(os.getuid(), os.getgid(), status["CapEff"].strip(), status["NoNewPrivs"].strip(), root)
"""


def service(chart: InstalledChart, component: str) -> str:
    """The Service's ClusterIP, as cluster DNS answers for its name."""
    return chart.node.resolve(f"{chart.release}-{component}.{chart.namespace}.svc.cluster.local")


def pod_of(chart: InstalledChart, component: str) -> str:
    found = pods(chart.node.cluster, chart.namespace, f"app.kubernetes.io/component={component}")
    name: str = found[0]["metadata"]["name"]
    return name


def test_node_runs_the_built_images(installed_chart: InstalledChart) -> None:
    node, ns = installed_chart.node, installed_chart.namespace
    images = {
        s["image"]
        for p in pods(node.cluster, ns)
        for s in p.get("status", {}).get("containerStatuses", [])
    }
    assert node.images["tapedeck"].tag in images, images
    [ready] = node.cluster.request("GET", "/api/v1/nodes")["items"]
    addresses = {a["type"]: a["address"] for a in ready["status"]["addresses"]}
    assert addresses["InternalIP"] == node.ip
    assert set(restarts(node.cluster, ns).values()) <= {0}, dump(node, ns)


def test_cluster_dns_answers_only_cluster_names(installed_chart: InstalledChart) -> None:
    """CoreDNS serves cluster.local and forwards nothing: no pod's lookup leaves the machine."""
    node = installed_chart.node
    assert node.resolve("kubernetes.default.svc.cluster.local") == "10.96.0.1"
    with pytest.raises(LookupError):
        node.resolve("example.com")


def test_helm_test_passes(installed_chart: InstalledChart) -> None:
    out = installed_chart.node.helm(
        "test",
        installed_chart.release,
        f"--namespace={installed_chart.namespace}",
        "--timeout=180s",
        check=False,
    )
    assert re.search(r"Phase:\s+Succeeded", out), out + dump(
        installed_chart.node, installed_chart.namespace
    )


@pytest.mark.parametrize("component", ["storage", "ingest", "api", "operator"])
def test_the_security_context_holds(installed_chart: InstalledChart, component: str) -> None:
    """In the running container: uid/gid 10001, no effective capabilities, no new privileges,
    and a root file system that refuses writes."""
    out = installed_chart.node.kubectl(
        "exec",
        f"--namespace={installed_chart.namespace}",
        pod_of(installed_chart, component),
        "--",
        "python",
        "-c",
        SECURITY_PROBE,
    )
    assert out.split() == ["10001", "10001", "0000000000000000", "1", "OSError"], out


def record(chart: InstalledChart, video: bytes, audio: bytes) -> str:
    """A finished session, sent by the protocol client over the ingest Service."""
    ingest = f"ws://{service(chart, 'ingest')}:80"

    async def go() -> str:
        first = await upload_track(ingest, "video", video, started_at=T0)
        await upload_track(
            ingest,
            "audio",
            audio,
            session_id=first.session_id,
            token=first.upload_token,
            mime_type="audio/webm;codecs=opus",
            started_at=T0,
            frame_bytes=16 * 1024,
        )
        return first.session_id

    return asyncio.run(go())


def compile_session(
    chart: InstalledChart, session_id: str, tmp_path: Path, explain: Callable[[], str] = str
) -> None:
    """A RecordingSession asking for a compile; the operator runs the Job until Ready. A
    failure shows the namespace's pods and logs, plus `explain()` (another server's log)."""
    node = chart.node
    manifest = tmp_path / f"{session_id}.yaml"
    manifest.write_text(
        json.dumps(
            {
                "apiVersion": "tapedeck.io/v1alpha1",
                "kind": "RecordingSession",
                "metadata": {"name": session_id, "namespace": chart.namespace},
                "spec": {"compile": True},
            }
        )
    )
    node.kubectl("apply", "-f", str(manifest))
    resource = (
        f"/apis/tapedeck.io/v1alpha1/namespaces/{chart.namespace}/recordingsessions/{session_id}"
    )

    def done() -> dict[str, Any] | None:
        got: dict[str, Any] = node.cluster.request("GET", resource)
        return got if got.get("status", {}).get("phase") in ("Ready", "Failed") else None

    try:
        finished = wait_until(done, 300, f"the compile of {session_id}", 1)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{dump(node, chart.namespace)}\n{explain()}") from None
    assert finished["status"]["phase"] == "Ready", (
        f"{finished['status']}\n{dump(node, chart.namespace)}\n{explain()}"
    )


def test_record_compile_download(
    installed_chart: InstalledChart, h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    record_compile_download(installed_chart, h264_webm, opus_webm, tmp_path)


def record_compile_download(
    chart: InstalledChart, video: Path, audio: Path, tmp_path: Path
) -> None:
    """A session recorded over the ingest Service, compiled by the operator's Job on the compile
    image, and its MP4 downloaded from the api Service and checked with ffprobe."""
    node = chart.node
    session_id = record(chart, video.read_bytes(), audio.read_bytes())
    compile_session(chart, session_id, tmp_path)

    # The Job ran on the compile image.
    jobs = node.cluster.request("GET", f"/apis/batch/v1/namespaces/{chart.namespace}/jobs")
    [job] = [
        j
        for j in jobs["items"]
        if any(o["name"] == session_id for o in j["metadata"].get("ownerReferences", []))
    ]
    selector = f"job-name={job['metadata']['name']}"

    def ended() -> list[dict[str, Any]] | None:
        # The operator may see the outcome in storage before the kubelet reports the pod's end.
        found = pods(node.cluster, chart.namespace, selector)
        return found if found and found[0]["status"].get("phase") == "Succeeded" else None

    [compile_pod] = wait_until(ended, 120, "the compile pod to end", 1)
    [status] = compile_pod["status"]["containerStatuses"]
    assert status["image"] == node.images["tapedeck-compile"].tag
    assert status["state"]["terminated"]["exitCode"] == 0, status

    # Downloaded through the api Service, found by its name in cluster DNS.
    name = f"{chart.release}-api.{chart.namespace}.svc.cluster.local"
    token = api_token(node.cluster, chart.namespace)
    reply = httpx.get(
        f"http://{service(chart, 'api')}:80/api/download/{session_id}",
        headers={"Authorization": f"Bearer {token}", "Host": name},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "video/mp4"
    mp4 = tmp_path / "out.mp4"
    mp4.write_bytes(reply.content)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(mp4)],
        capture_output=True,
        text=True,
        check=True,
    )
    streams = json.loads(probe.stdout)["streams"]
    assert sorted(s["codec_name"] for s in streams) == ["aac", "h264"], streams
    assert float(json.loads(probe.stdout)["format"]["duration"]) > 3


def watch_until_deleted(node: RealNode, namespace: str, pod: dict[str, Any]) -> dict[str, Any]:
    """Deletes a pod and returns its last state, as the API server's DELETED watch event has it."""
    name = pod["metadata"]["name"]
    # From the list's resourceVersion (now), not the pod's: after other tests' churn of pods the
    # pod's own version can be older than the API server's watch window (410 Gone, watch ends).
    listed = node.cluster.request(
        "GET", f"/api/v1/namespaces/{namespace}/pods?fieldSelector=metadata.name={name}"
    )
    version = listed["metadata"]["resourceVersion"]
    url = (
        f"{node.cluster.server}/api/v1/namespaces/{namespace}/pods?watch=1"
        f"&fieldSelector=metadata.name={name}&resourceVersion={version}"
    )
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    context = ssl.create_default_context(cafile=str(node.cluster.ca_file))
    with urllib.request.urlopen(request, context=context, timeout=120) as stream:
        node.cluster.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
        for line in stream:
            event = json.loads(line)
            obj: dict[str, Any] = event["object"]
            if event["type"] == "ERROR":
                raise AssertionError(f"the watch of {name} failed: {obj}")
            if event["type"] == "DELETED" and obj["metadata"]["uid"] == pod["metadata"]["uid"]:
                return obj
    raise AssertionError(f"the watch of {name} ended before the pod was deleted")


def test_deleting_the_storage_pod_ends_it_with_sigterm(installed_chart: InstalledChart) -> None:
    """storage as PID 1 stops on the kubelet's SIGTERM and exits 0 (before the fix, it ignored
    SIGTERM and was killed when the grace period ran out: exit code 137)."""
    chart, node = installed_chart, installed_chart.node
    [storage] = pods(node.cluster, chart.namespace, "app.kubernetes.io/component=storage")
    last = watch_until_deleted(node, chart.namespace, storage)
    [status] = last["status"]["containerStatuses"]
    terminated = status["state"].get("terminated") or status.get("lastState", {}).get("terminated")
    assert terminated is not None, last["status"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed"), terminated
    # The StatefulSet brings it back on the same volume, and the release serves again.
    wait_until(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True"
            for p in pods(node.cluster, chart.namespace, "app.kubernetes.io/component=storage")
            if p["metadata"]["uid"] != storage["metadata"]["uid"]
            for c in p.get("status", {}).get("conditions", [])
        ),
        180,
        "the new storage pod",
        1,
    )
