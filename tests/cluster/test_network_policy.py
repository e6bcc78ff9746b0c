"""The chart's NetworkPolicies, enforced on the real node.

The node's bridge CNI ignores NetworkPolicies; netpol-up.sh runs kube-network-policies (the SIG
Network reference implementation, nfqueue) on it for this module, netpol-down.sh stops it
after. Probe pods run the service image (it has Python) under the restricted Pod Security
Standard: a stray pod labelled like nothing in the chart, a pod labelled like the operator's
compile pods, and a pod in the `ingress-nginx` namespace (the chart's default
`networkPolicy.ingressFrom`). Each probe is a TCP connect from inside a pod, through
`kubectl exec`; a refused connection times out (the first packet is dropped).

TAPEDECK_NETPOL_ENFORCER=off runs the module without the enforcer (the policies are then
ignored): the refusals fail, which shows that they can.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.conftest import required
from cluster.helpers import api_token, pod_ip, pods, wait_until
from cluster.node import HERE, InstalledChart, RealNode, dump
from cluster.test_node import T0, record_compile_download, service
from tapedeck.ingest.uploader import upload_track

OFF = os.environ.get("TAPEDECK_NETPOL_ENFORCER") == "off"
INGRESS_NAMESPACE = "ingress-nginx"
# Long enough for a slow but allowed connect on a loaded machine; a dropped SYN never answers.
CONNECT_TIMEOUT = 8
CONNECT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.settimeout(float(sys.argv[3]))
try:
    sock.connect((sys.argv[1], int(sys.argv[2])))
    print("open")
except TimeoutError:
    print("timeout")
except OSError as err:
    print(type(err).__name__)
"""
RESOLVE = """
import socket, sys
print(socket.getaddrinfo(sys.argv[1], 0, socket.AF_INET)[0][4][0])
"""
# The operator's own credentials against the API server, as its client library uses them.
API_SERVER = """
import json, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
request = urllib.request.Request(
    "https://kubernetes.default.svc/version",
    headers={"Authorization": "Bearer " + open(sa + "/token").read()},
)
context = ssl.create_default_context(cafile=sa + "/ca.crt")
print(json.load(urllib.request.urlopen(request, context=context, timeout=20))["gitVersion"])
"""


@dataclass(frozen=True)
class Probes:
    """The chart installed with enforcement on, and where the probe pods run."""

    chart: InstalledChart
    # name -> (namespace, pod)
    pods: dict[str, tuple[str, str]]

    @property
    def node(self) -> RealNode:
        return self.chart.node


def probe_pod(image: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod that only waits for `kubectl exec`, passing the restricted Pod Security Standard."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", "import time; time.sleep(86400)"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


def running(node: RealNode, namespace: str, name: str) -> bool:
    status, body = node.cluster.raw("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    return status == 200 and json.loads(body).get("status", {}).get("phase") == "Running"


def enforcer(node: RealNode, script: str) -> None:
    result = subprocess.run(
        [str(HERE / script), str(node.root)], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        log = node.root / "logs" / "kube-network-policies.log"
        tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise RuntimeError(f"{script} exited {result.returncode}:\n{result.stderr[-4000:]}\n{tail}")


@pytest.fixture(scope="session")
def netpol_built() -> None:
    """Checked before the node starts (session fixtures set up in the order asked for)."""
    built = subprocess.run(
        [str(HERE / "build-netpol.sh"), "--check"], capture_output=True, text=True
    )
    if built.returncode != 0:
        message = f"{built.stderr.strip()}: run tests/cluster/build-netpol.sh"
        if required():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def probes(netpol_built: None, installed_chart: InstalledChart) -> Iterator[Probes]:
    chart, node = installed_chart, installed_chart.node
    ns = chart.namespace
    image = node.images["tapedeck"].tag
    status, reply = node.cluster.raw(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": INGRESS_NAMESPACE}},
    )
    assert status in (201, 409), reply
    wanted = {
        # Labelled like nothing in the chart.
        "stray": (ns, "netpol-stray", {"tapedeck.test/role": "stray"}),
        # Labelled like the compile pods the operator makes (tapedeck.compileSelector).
        "compile": (
            ns,
            "netpol-compile",
            {
                "app.kubernetes.io/name": "tapedeck",
                "app.kubernetes.io/instance": chart.release,
                "app.kubernetes.io/component": "compile",
                "app.kubernetes.io/managed-by": "tapedeck-operator",
            },
        ),
        # In the ingress controller's namespace, which networkPolicy.ingressFrom lets in.
        "ingress-controller": (INGRESS_NAMESPACE, "netpol-ingress", {"app": "ingress-probe"}),
    }
    for namespace, name, labels in wanted.values():
        status, reply = node.cluster.raw(
            "POST", f"/api/v1/namespaces/{namespace}/pods", probe_pod(image, name, labels)
        )
        assert status in (201, 409), reply
    try:
        for namespace, name, _ in wanted.values():
            wait_until(lambda n=namespace, p=name: running(node, n, p), 180, f"pod {name}", 1)
        if not OFF:
            enforcer(node, "netpol-up.sh")
        found = {key: (namespace, name) for key, (namespace, name, _) in wanted.items()}
        for component in ("storage", "ingest", "api", "operator"):
            [pod] = [
                p
                for p in pods(node.cluster, ns, f"app.kubernetes.io/component={component}")
                if not p["metadata"].get("deletionTimestamp")
            ][:1]
            found[component] = (ns, pod["metadata"]["name"])
        yield Probes(chart, found)
    finally:
        enforcer(node, "netpol-down.sh")
        for namespace, name, _ in wanted.values():
            node.cluster.raw("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}")
        node.cluster.raw("DELETE", f"/api/v1/namespaces/{INGRESS_NAMESPACE}")


def run_in(probes: Probes, source: str, code: str, *args: str) -> str:
    namespace, pod = probes.pods[source]
    out = probes.node.kubectl(
        "exec", f"--namespace={namespace}", pod, "--", "python", "-c", code, *args, timeout=120
    )
    return out.strip().splitlines()[-1] if out.strip() else out


def connect(probes: Probes, source: str, address: str, port: int) -> str:
    """'open', 'timeout' (the first packet dropped) or the error's name, seen from `source`."""
    return run_in(probes, source, CONNECT, address, str(port), str(CONNECT_TIMEOUT))


def target(probes: Probes, component: str) -> str:
    return pod_ip(probes.node.cluster, probes.chart.namespace, component)


def port(probes: Probes, component: str, name: str) -> int:
    """A named container port of the component's pod (as the policies name it)."""
    namespace, pod = probes.pods[component]
    spec = probes.node.cluster.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}")["spec"]
    [number] = [
        p["containerPort"]
        for c in spec["containers"]
        for p in c.get("ports", [])
        if p.get("name") == name
    ]
    return int(number)


def explain(probes: Probes) -> str:
    log = probes.node.root / "logs" / "kube-network-policies.log"
    return (log.read_text(errors="replace")[-3000:] if log.exists() else "") + dump(
        probes.node, probes.chart.namespace
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("ingest", "open"),
        ("api", "open"),
        ("operator", "open"),
        ("compile", "open"),
        ("stray", "timeout"),
        ("ingress-controller", "timeout"),
    ],
)
def test_only_the_chart_clients_reach_storage_grpc(
    probes: Probes, source: str, expected: str
) -> None:
    got = connect(probes, source, target(probes, "storage"), port(probes, "storage", "grpc"))
    assert got == expected, f"{source} -> storage:grpc: {got}\n{explain(probes)}"


def test_a_stray_pod_does_not_reach_storage_metrics(probes: Probes) -> None:
    """networkPolicy.metricsFrom is empty by default: nobody scrapes storage's metrics port."""
    got = connect(probes, "stray", target(probes, "storage"), port(probes, "storage", "metrics"))
    assert got == "timeout", f"stray -> storage:metrics: {got}"


@pytest.mark.parametrize("component", ["ingest", "api"])
@pytest.mark.parametrize(
    ("source", "expected"), [("stray", "timeout"), ("ingress-controller", "open")]
)
def test_http_of_ingest_and_api_only_from_the_ingress_namespace(
    probes: Probes, component: str, source: str, expected: str
) -> None:
    got = connect(probes, source, target(probes, component), port(probes, component, "http"))
    assert got == expected, f"{source} -> {component}:http: {got}\n{explain(probes)}"


@pytest.mark.parametrize(("source", "component"), [("ingest", "api"), ("compile", "api")])
def test_egress_beyond_the_rules_is_refused(probes: Probes, source: str, component: str) -> None:
    """Default deny holds outbound too: ingest and compile pods talk to storage and DNS only."""
    got = connect(probes, source, target(probes, component), port(probes, component, "http"))
    assert got == "timeout", f"{source} -> {component}:http: {got}"


@pytest.mark.parametrize("source", ["storage", "ingest", "api", "operator", "compile"])
def test_cluster_dns_answers_every_pod_of_the_release(probes: Probes, source: str) -> None:
    name = f"{probes.chart.release}-storage.{probes.chart.namespace}.svc.cluster.local"
    got = run_in(probes, source, RESOLVE, name)
    assert got == probes.node.resolve(name), f"{source} resolved {name}: {got}"


@pytest.mark.parametrize("source", ["operator", "api"])
def test_the_api_server_answers_the_operator_and_the_api(probes: Probes, source: str) -> None:
    got = run_in(probes, source, API_SERVER)
    assert got.startswith("v1."), f"{source} -> API server: {got}"


def test_record_compile_download_with_enforcement(
    probes: Probes, h264_webm: Path, opus_webm: Path, tmp_path: Path
) -> None:
    """Media in through ingest, the operator's compile Job (its own policy) reading and writing
    storage, the MP4 out of the api: the whole path under the policies."""
    record_compile_download(probes.chart, h264_webm, opus_webm, tmp_path)


def test_a_follower_reaches_storage_under_the_policies(
    probes: Probes, h264_webm: Path, opus_webm: Path
) -> None:
    """A session the api made gets a follower Job, which mirrors the tracks from storage while
    they record and compiles them: its pods are compile pods to the policies (storage and DNS
    only). Had they been left out, the follower would fail and a compile Job would run."""
    chart, node = probes.chart, probes.node
    ns = chart.namespace
    api = httpx.Client(
        base_url=f"http://{service(chart, 'api')}:80",
        headers={
            "Authorization": f"Bearer {api_token(node.cluster, ns)}",
            "Host": f"{chart.release}-api.{ns}.svc.cluster.local",
        },
        timeout=60,
    )
    created = api.post("/api/sessions").json()
    session_id, token = created["id"], created["uploadToken"]
    jobs_path = f"/apis/batch/v1/namespaces/{ns}/jobs"

    def owned(followers: bool) -> list[dict[str, Any]]:
        return [
            j
            for j in node.cluster.request("GET", jobs_path)["items"]
            if any(o["name"] == session_id for o in j["metadata"].get("ownerReferences", []))
            and ("tapedeck.io/follower" in j["metadata"]["labels"]) == followers
        ]

    wait_until(
        lambda: (f := owned(True)) and (f[0].get("status") or {}).get("ready"),
        180,
        "the follower's pod to run",
        0.5,
    )
    ingest = f"ws://{service(chart, 'ingest')}:80"

    async def go() -> None:
        await asyncio.gather(
            upload_track(ingest, "video", h264_webm.read_bytes(), session_id=session_id,
                         token=token, started_at=T0),
            upload_track(ingest, "audio", opus_webm.read_bytes(), session_id=session_id,
                         token=token, mime_type="audio/webm;codecs=opus", started_at=T0,
                         frame_bytes=16 * 1024),
        )  # fmt: skip

    asyncio.run(go())
    assert api.post(f"/api/compile-video/{session_id}").status_code == 202
    resource = f"/apis/tapedeck.io/v1alpha1/namespaces/{ns}/recordingsessions/{session_id}"
    try:
        done = wait_until(
            lambda: (
                (s := node.cluster.request("GET", resource).get("status") or {}).get("phase")
                in ("Ready", "Failed")
                and s
            ),
            180,
            "the compile",
            0.5,
        )
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{dump(node, ns)}") from None
    assert done["phase"] == "Ready", done
    assert owned(False) == [], f"the follower did not compile: {dump(node, ns)}"
    assert api.get(f"/api/download/{session_id}").status_code == 200
