"""`helm install` of every chart variant into the real API server, then `helm test`.

The namespaces enforce the "restricted" Pod Security Standard, so the API server itself refuses
a pod of the chart that is not. The release runs on the suite's real node (node.py): the images
built from docker/Dockerfile, run by kubelet and containerd, so `helm install --wait` waits for
real readiness probes and the `helm test` pod checks the api's /readyz through its Service and
cluster DNS. The install must leave every container without restarts.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import httpx
import pytest
import yaml

from cluster.controlplane import ControlPlane
from cluster.helpers import (
    CHART,
    CI_VALUES,
    api_token,
    create_secret,
    delete_namespace,
    gateway_crd,
    pod_ip,
    pods,
    restarts,
    wait_until,
)
from cluster.node import RealNode, dump, image_values, install, restricted_namespace


def install_gateway_api(cluster: ControlPlane) -> None:
    path = gateway_crd()
    assert path.exists(), f"{path} missing: run tests/cluster/build-tools.sh"
    body = yaml.safe_load(path.read_text())
    status, reply = cluster.raw(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body
    )
    assert status in (201, 409), reply[:500]
    wait_until(
        lambda: cluster.raw("GET", "/apis/gateway.networking.k8s.io/v1")[0] == 200,
        30,
        "the Gateway API",
    )


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_install_and_helm_test(real_node: RealNode, values: Path) -> None:
    cluster, kube_helm = real_node.cluster, real_node.helm
    ns = "v-" + values.name.removesuffix("-values.yaml")
    try:
        if "gateway" in values.name:
            install_gateway_api(cluster)
        overrides: list[str] = []
        if "no-networkpolicy" in values.name:
            restricted_namespace(real_node, ns)
            create_secret(
                cluster, ns, "tapedeck-ci-secret", {"secret-key": "k" * 48, "api-token": "t0k"}
            )
        else:
            # One replica each keeps the suite light on two cores; the variant's own
            # replica counts are checked by `helm template` in test_chart.py.
            overrides = ["--set=ingest.replicas=1,api.replicas=1"]
        out = install(real_node, ns, "-f", str(values), *overrides)
        assert "STATUS: deployed" in out, out + dump(real_node, ns)
        assert "kind: RecordingSession" in out  # NOTES.txt
        if "ingress" in values.name:
            assert "https://tapedeck.ci.example/" in out
        anonymous = bool(yaml.safe_load(values.read_text()).get("auth", {}).get("allowAnonymous"))
        secret_name = "tapedeck-ci-secret" if "no-networkpolicy" in values.name else None
        if anonymous:
            assert "WARNING: auth.allowAnonymous is true" in out, out
        else:
            secret = secret_name or "tapedeck-secret"
            read = (
                f"kubectl -n {ns} get secret {secret} -o jsonpath='{{.data.api-token}}' | base64 -d"
            )
            assert read in out, out  # NOTES say how to read the token
        # /api as a client of the release sees it: the token from the Secret, or none.
        api = f"http://{pod_ip(cluster, ns, 'api')}:8080"
        bare = httpx.get(f"{api}/api/sessions", timeout=30)
        if anonymous:
            assert bare.status_code == 200, bare.text
        else:
            assert bare.status_code == 401, bare.text
            token = api_token(cluster, ns, secret_name or "tapedeck-secret")
            if values.name == "ingress-token-values.yaml":
                assert token == "ci-token-0123456789abcdef"
            elif secret_name is None:
                assert len(token) == 48, "generated at install"
            authorized = httpx.get(
                f"{api}/api/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            assert authorized.status_code == 200, authorized.text

        kinds = {
            "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
            "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets",
            "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
            "HTTPRoute": "/apis/gateway.networking.k8s.io/v1/namespaces/{ns}/httproutes",
            "Ingress": "/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses",
        }
        found = {}
        for kind, path in kinds.items():
            status, _ = cluster.raw("GET", path.format(ns=ns))
            found[kind] = (
                len(cluster.request("GET", path.format(ns=ns))["items"]) if status == 200 else 0
            )
        assert found["Deployment"] == 3 and found["StatefulSet"] == 1
        assert (found["NetworkPolicy"] > 0) == ("no-networkpolicy" not in values.name)
        assert (found["HTTPRoute"] == 1) == ("gateway" in values.name)
        assert (found["Ingress"] == 1) == ("ingress" in values.name)

        tested = kube_helm("test", "tapedeck", f"--namespace={ns}", "--timeout=120s", check=False)
        assert re.search(r"TEST SUITE:\s+tapedeck-test-readyz", tested), tested
        assert re.search(r"Phase:\s+Succeeded", tested), tested + dump(real_node, ns)

        assert set(restarts(cluster, ns).values()) <= {0}, dump(real_node, ns)

        if secret_name is None:
            # An upgrade keeps the generated HMAC key (upload tokens stay valid) and the
            # generated API token (people and scripts hold it).
            path = f"/api/v1/namespaces/{ns}/secrets/tapedeck-secret"
            before = cluster.request("GET", path)["data"]
            assert len(base64.b64decode(before["secret-key"])) == 48
            assert ("api-token" in before) != anonymous, before.keys()
            kube_helm(
                "upgrade",
                "tapedeck",
                str(CHART),
                f"--namespace={ns}",
                "-f",
                str(values),
                *image_values(real_node),
                *overrides,
                "--timeout=120s",
            )
            assert cluster.request("GET", path)["data"] == before

        kube_helm("uninstall", "tapedeck", f"--namespace={ns}", "--wait", "--timeout=120s")
        wait_until(
            lambda: not [p for p in pods(cluster, ns) if "compile" not in p["metadata"]["name"]],
            60,
            "the release's pods to go",
        )
    finally:
        delete_namespace(cluster, ns)
