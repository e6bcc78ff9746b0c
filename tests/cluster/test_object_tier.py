"""The chart with the object tier and two storage replicas on the real node (issue 15).

SeaweedFS (`weed mini`, tests/s3/build-weed.sh) runs as a host process bound to the node's
address, which pods reach without leaving the machine; its credentials go in as an existing
Secret. Sessions recorded over the ingest Service land on both replicas (rendezvous placement),
the operator compiles them in Jobs, the api Service serves the MP4s, and the bucket holds every
session's tracks, manifest and MP4.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.helpers import (
    CHART,
    api_token,
    create_secret,
    pods,
    restarts,
    wait_until,
)
from cluster.node import (
    NODE_IP,
    InstalledChart,
    RealNode,
    dump,
    host_path_volume,
    image_values,
    restricted_namespace,
)
from cluster.test_node import compile_session, record, service
from s3_fixtures import REGION, WeedServer, need_weed
from tapedeck.placement import place

NAMESPACE, RELEASE, BUCKET, PREFIX = "tapedeck-s3", "tapedeck", "tapedeck-cluster", "rec/"
SECRET = "object-store"


@pytest.fixture(scope="module")
def node_weed(
    real_node: RealNode, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WeedServer]:
    """`weed mini` on the node's address (it exists only while the node runs), stopped by PID.
    Its data is on a 1 GiB tmpfs of its own with explicit volume settings: on the shared disk,
    left to size itself, it once refused every upload (InternalError) with the disk 89 % full.
    Its log stays beside it, and its tail goes into every failure message of this module."""
    root = tmp_path_factory.mktemp("weed")
    server = WeedServer(need_weed(), root, host=NODE_IP, disk_mb=1024, max_volumes=12)
    try:
        server.start()
        server.create_bucket(BUCKET)
        server.create_bucket(BUCKET)  # set-up may run again: a bucket already there is fine
        yield server
    finally:
        server.release()
        shutil.rmtree(root, ignore_errors=True)


def explain(node: RealNode, namespace: str, weed: WeedServer) -> str:
    """What to look at when this module fails: the pods, their logs, and weed's log."""
    return f"{dump(node, namespace)}\n{weed.log_tail()}"


@pytest.fixture(scope="module")
def tiered_chart(real_node: RealNode, node_weed: WeedServer) -> Iterator[InstalledChart]:
    """Its own release: two storage replicas (each its own volume), the object tier on, the
    credentials in an existing Secret, egress to the store opened for exactly its port."""
    node = real_node
    restricted_namespace(node, NAMESPACE)
    create_secret(
        node.cluster,
        NAMESPACE,
        SECRET,
        {
            "AWS_ACCESS_KEY_ID": node_weed.access_key,
            "AWS_SECRET_ACCESS_KEY": node_weed.secret_key,
        },
    )
    host_path_volume(node, NAMESPACE, RELEASE, index=1)
    chart = InstalledChart(node, NAMESPACE, RELEASE)
    try:
        host_path_volume(node, NAMESPACE, RELEASE)
        args = [
            "--set=storage.replicas=2,ingest.replicas=1,api.replicas=1",
            f"--set=objectStore.bucket={BUCKET},objectStore.prefix={PREFIX}",
            f"--set=objectStore.endpoint={node_weed.endpoint},objectStore.region={REGION}",
            f"--set=objectStore.existingSecret={SECRET},objectStore.partSize={5 * 1024 * 1024}",
            f"--set=networkPolicy.objectStore.ports={{{node_weed.ports['s3']}}}",
            f"--set=networkPolicy.objectStore.cidrs={{{NODE_IP}/32}}",
        ]
        try:  # two storage pods start one after the other: more time than one release
            out = node.helm(
                "install",
                RELEASE,
                str(CHART),
                f"--namespace={NAMESPACE}",
                *image_values(node),
                *args,
                "--wait",
                "--timeout=600s",
                check=False,
                timeout=660,
            )
        except subprocess.TimeoutExpired as err:
            raise AssertionError(f"{err}\n{explain(node, NAMESPACE, node_weed)}") from None
        assert "STATUS: deployed" in out, out + explain(node, NAMESPACE, node_weed)
        yield chart
    finally:
        # The RecordingSessions first, while the operator runs: their finalizer deletes the
        # data (docs/kubernetes.md); then the release, as `installed_chart` leaves it.
        node.cluster.raw(
            "DELETE", f"/apis/tapedeck.io/v1alpha1/namespaces/{NAMESPACE}/recordingsessions"
        )
        wait_until(
            lambda: (
                not node.cluster.request(
                    "GET", f"/apis/tapedeck.io/v1alpha1/namespaces/{NAMESPACE}/recordingsessions"
                )["items"]
            ),
            120,
            "the RecordingSessions to be finalized",
            1,
        )
        node.helm("uninstall", RELEASE, f"--namespace={NAMESPACE}", "--wait", check=False)


def probe(mp4: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(mp4)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, Any] = json.loads(out)
    return found


def test_two_replicas_over_the_bucket(
    tiered_chart: InstalledChart,
    node_weed: WeedServer,
    h264_webm: Path,
    opus_webm: Path,
    tmp_path: Path,
) -> None:
    chart, node = tiered_chart, tiered_chart.node
    storage = pods(node.cluster, chart.namespace, "app.kubernetes.io/component=storage")
    why = functools.partial(explain, node, chart.namespace, node_weed)
    assert len(storage) == 2, why()

    # Record until each replica owns a session (placement is a hash of the id: 1/2 each).
    video, audio = h264_webm.read_bytes(), opus_webm.read_bytes()
    owned: dict[int, str] = {}
    for _ in range(16):
        session_id = record(chart, video, audio)
        owned.setdefault(place(session_id, 2), session_id)
        if len(owned) == 2:
            break
    assert sorted(owned) == [0, 1], owned

    # Each compiled by the operator's Job, through its owner.
    for session_id in owned.values():
        compile_session(chart, session_id, tmp_path, why)

    # Downloaded through the api Service, whichever replica owns them.
    name = f"{chart.release}-api.{chart.namespace}.svc.cluster.local"
    headers = {"Authorization": f"Bearer {api_token(node.cluster, chart.namespace)}", "Host": name}
    api = f"http://{service(chart, 'api')}:80"
    for session_id in owned.values():
        reply = httpx.get(f"{api}/api/download/{session_id}", headers=headers, timeout=60)
        assert reply.status_code == 200, f"{reply.text}\n{why()}"
        mp4 = tmp_path / f"{session_id}.mp4"
        mp4.write_bytes(reply.content)
        found = probe(mp4)
        assert sorted(s["codec_name"] for s in found["streams"]) == ["aac", "h264"], found
        assert float(found["format"]["duration"]) > 3

    # The bucket holds each session's tracks, MP4 and manifest (shipping runs behind the acks,
    # so wait for it); the manifest names the owner.
    client: Any = node_weed.client()

    def in_bucket(session_id: str) -> dict[str, Any] | None:
        base = f"{PREFIX}sessions/{session_id}/"
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=base).get("Contents", [])
        sizes = {o["Key"][len(base) :]: o["Size"] for o in listed}
        expected = {
            "video.webm": len(video),
            "audio.webm": len(audio),
            f"{session_id}.mp4": (tmp_path / f"{session_id}.mp4").stat().st_size,
        }
        if any(sizes.get(k) != v for k, v in expected.items()) or "session.json" not in sizes:
            return None
        body = client.get_object(Bucket=BUCKET, Key=f"{base}session.json")["Body"].read()
        manifest: dict[str, Any] = json.loads(body)
        return manifest if manifest.get("output") else None

    for replica, session_id in owned.items():
        try:
            manifest = wait_until(
                functools.partial(in_bucket, session_id), 120, f"{session_id} shipped", 1
            )
        except TimeoutError as err:
            raise AssertionError(f"{err}\n{why()}") from None
        assert manifest["replica"] == replica, manifest

    # The api lists both from the bucket's listing, newest first.
    listing = httpx.get(f"{api}/api/sessions", headers=headers, timeout=60)
    assert listing.status_code == 200, listing.text
    listed_ids = {s["id"] for s in listing.json()["items"]}
    assert set(owned.values()) <= listed_ids, listing.json()
    assert set(restarts(node.cluster, chart.namespace).values()) <= {0}, why()
