"""Autoscaling on the real node (issue 17): metrics-server, built from its Go module
(build-metrics-server.sh), serves the resource metrics API; an HPA on ingest's CPU adds replicas
while protocol clients record faster than real time, and the recordings go on across the change.
The HPA is the chart's (`ingest.autoscaling`, by `helm upgrade --reuse-values`; rolled back after).

metrics-server runs as a host process on the node's address with the admin kubeconfig (like
Traefik in test_ingress_browser.py), behind a selectorless Service and the APIService
v1beta1.metrics.k8s.io; the API server's front proxy (node-up.sh) authenticates to it with its
client certificate. It reaches the kubelet by InternalIP with --kubelet-insecure-tls: the
kubelet's self-signed serving certificate names only the node's host name, no address.

Not in `make test-cluster` (minutes of load): `make test-cluster-long` runs it.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.controlplane import Process
from cluster.helpers import api_token, built_at, pods, wait_until
from cluster.ingress import make_tls
from cluster.node import CHART, NODE_IP, InstalledChart, RealNode, dump
from cluster.recorders import (
    Media,
    Recorders,
    check_stored,
    keeps_recording,
    make_media,
    new_sessions,
)
from cluster.test_node import service

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-metrics-server.sh"
PORT = 4443
APISERVICE = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.k8s.io"
CLIENTS = int(os.environ.get("TAPEDECK_AUTOSCALE_CLIENTS", "24"))
SPEED = 2.0  # media sent at twice real time
# Of ingest's CPU request (100m). 12 clients at 2x kept each of the two pods near 21% here;
# 24 go well past 25%, with a machine shared by other work still able to send that.
TARGET = 25
MAX_REPLICAS = 4


def metrics_server_binary() -> Path:
    """Where build-metrics-server.sh caches the version it pins (its `--where`)."""
    return built_at(BUILD_SCRIPT.name)


def post(node: RealNode, path: str, body: dict[str, Any]) -> None:
    status, reply = node.cluster.raw("POST", path, body)
    assert status in (201, 409), reply[:2000]


@pytest.fixture(scope="module")
def metrics_server(real_node: RealNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    binary = metrics_server_binary()
    if not os.access(binary, os.X_OK):
        message = f"missing {binary}: run tests/cluster/build-metrics-server.sh"
        if os.environ.get("CI") == "true" or os.environ.get("TAPEDECK_REQUIRE_CLUSTER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    node, work = real_node, tmp_path_factory.mktemp("metrics-server")
    # The aggregator checks the serving certificate against the Service's DNS name.
    tls = make_tls(work / "tls", "metrics-server.kube-system.svc")
    (work / "tls.crt").write_bytes(tls.cert_pem)
    (work / "tls.key").write_bytes(tls.key_pem)
    kubeconfig = str(node.kubeconfig)
    process = Process(
        "metrics-server",
        [
            str(binary),
            f"--bind-address={NODE_IP}",
            f"--secure-port={PORT}",
            f"--tls-cert-file={work / 'tls.crt'}",
            f"--tls-private-key-file={work / 'tls.key'}",
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-insecure-tls",
            "--metric-resolution=15s",
        ],
        work / "metrics-server.log",
    )
    process.start(env=node.env())
    try:
        post(
            node,
            "/api/v1/namespaces/kube-system/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "metrics-server"},
                "spec": {"ports": [{"name": "https", "port": 443, "targetPort": PORT}]},
            },
        )
        post(
            node,
            "/api/v1/namespaces/kube-system/endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "metrics-server"},
                "subsets": [
                    {
                        "addresses": [{"ip": NODE_IP}],
                        "ports": [{"name": "https", "port": PORT}],
                    }
                ],
            },
        )
        post(
            node,
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
                    "caBundle": base64.b64encode(tls.ca_file.read_bytes()).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        )

        def node_metrics() -> bool:
            status, body = node.cluster.raw("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
            return status == 200 and bool(json.loads(body).get("items"))

        try:
            wait_until(node_metrics, 180, "node metrics from metrics-server", 2)
        except TimeoutError as err:
            apiservice = node.cluster.raw("GET", APISERVICE)[1].decode()[-2000:]
            raise AssertionError(f"{err}\n{apiservice}\n{process.tail()}") from None
        yield
    finally:
        # An APIService that no longer answers breaks discovery (helm, kubectl) for the rest.
        node.cluster.raw("DELETE", APISERVICE)
        node.cluster.raw("DELETE", "/api/v1/namespaces/kube-system/services/metrics-server")
        process.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return make_media(tmp_path_factory.mktemp("autoscale-media"))


def enable_hpa(chart: InstalledChart) -> None:
    """The chart's own ingest HPA (`ingest.autoscaling`), with a target this load reaches."""
    chart.node.helm(
        "upgrade",
        chart.release,
        str(CHART),
        f"--namespace={chart.namespace}",
        "--reuse-values",
        "--set=ingest.autoscaling.enabled=true",
        f"--set=ingest.autoscaling.maxReplicas={MAX_REPLICAS}",
        f"--set=ingest.autoscaling.targetCPUUtilizationPercentage={TARGET}",
        "--wait",
        "--timeout=5m",
        timeout=330,
    )


def sample(node: RealNode, namespace: str, name: str) -> str:
    """One line of the timeline: the HPA's view and each ingest pod's CPU."""
    got = node.cluster.request(
        "GET", f"/apis/autoscaling/v2/namespaces/{namespace}/horizontalpodautoscalers/{name}"
    )
    status = got.get("status") or {}
    utilization = [
        m.get("resource", {}).get("current", {}).get("averageUtilization")
        for m in status.get("currentMetrics") or []
    ]
    code, body = node.cluster.raw(
        "GET",
        f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
        "?labelSelector=app.kubernetes.io/component=ingest",
    )
    cpu = (
        sorted(c["usage"]["cpu"] for p in json.loads(body)["items"] for c in p["containers"])
        if code == 200
        else []
    )
    return (
        f"replicas {status.get('currentReplicas')}->{status.get('desiredReplicas')} "
        f"cpu {utilization}% of request, pods {cpu}"
    )


def ready_ingest(node: RealNode, namespace: str) -> int:
    return sum(
        1
        for p in pods(node.cluster, namespace, "app.kubernetes.io/component=ingest")
        if any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
    )


@pytest.mark.timeout(1800)
def test_hpa_adds_ingest_replicas_and_recordings_go_on(
    installed_chart: InstalledChart, metrics_server: None, media: Media
) -> None:
    chart, node, ns = installed_chart, installed_chart.node, installed_chart.namespace
    name = f"{chart.release}-ingest"
    volume = node.root / "pv" / ns
    api = f"http://{service(chart, 'api')}:80"
    host = f"{chart.release}-api.{ns}.svc.cluster.local"
    recordings = new_sessions(api, host, api_token(node.cluster, ns), CLIENTS)
    recorders = Recorders(f"ws://{service(chart, 'ingest')}:80", recordings, media, SPEED)
    timeline: list[str] = []
    started = time.monotonic()
    enable_hpa(chart)
    deployment = node.cluster.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}")
    # Handing the count to the HPA keeps it: a Deployment without `replicas` falls back to 1.
    assert deployment["spec"]["replicas"] == 2, deployment["spec"]
    try:
        recorders.start()
        try:
            keeps_recording(volume, recordings, "the start")

            def scaled() -> bool:
                timeline.append(f"{time.monotonic() - started:4.0f} s {sample(node, ns, name)}")
                return ready_ingest(node, ns) > 2

            wait_until(scaled, 600, "the HPA to add a ready ingest replica", 10)
            keeps_recording(volume, recordings, "the scale-up")
            timeline.append(f"{time.monotonic() - started:4.0f} s {sample(node, ns, name)}")
        except (AssertionError, TimeoutError) as err:
            raise AssertionError(
                f"{err}\n{chr(10).join(timeline)}\n{dump(chart.node, chart.namespace)}"
            ) from None
        finally:
            recorders.stop()
        checked = sum(sum(check_stored(r, media, volume).values()) for r in recordings)
        print(f"{CLIENTS} clients at {SPEED}x real time, {checked} bytes checked")
        print("\n".join(timeline))
    finally:
        # Back to the chart as installed, for the tests that share it (no HPA, 2 replicas).
        node.helm("rollback", chart.release, f"--namespace={ns}", "--wait", timeout=330)
        node.kubectl(
            "rollout", "status", f"deployment/{name}", f"--namespace={ns}", "--timeout=300s"
        )
