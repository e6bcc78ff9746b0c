"""The RecordingSession CRD in a real API server: its schema, defaults, CEL rules, printer
columns (as `kubectl get` asks for them), short name and category."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from cluster.controlplane import ControlPlane
from cluster.helpers import create_namespace, delete_namespace

NS = "crd-tests"
PATH = f"/apis/tapedeck.io/v1alpha1/namespaces/{NS}/recordingsessions"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture(scope="module")
def api(cluster: ControlPlane, crd: dict[str, Any]) -> Iterator[ControlPlane]:
    create_namespace(cluster, NS)
    yield cluster
    delete_namespace(cluster, NS)


def resource(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tapedeck.io/v1alpha1",
        "kind": "RecordingSession",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_defaults_are_applied(api: ControlPlane) -> None:
    created = api.request("POST", PATH, resource("defaults-0001"))
    spec = created["spec"]
    assert spec["compile"] is False
    assert spec["compileRequest"] == 0
    assert "sessionId" not in spec  # defaults to the name, by the operator


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ({"sessionId": "Not_An_Id"}, "spec.sessionId"),
        ({"sessionId": "short"}, "spec.sessionId"),
        ({"compile": "yes"}, "spec.compile"),
        ({"output": {"crf": 52}}, "spec.output.crf"),
        ({"output": {"preset": "fastest"}}, "spec.output.preset"),
        ({"output": {"videoCodec": "vp9"}}, "spec.output.videoCodec"),
        ({"output": {"maxHeight": 8}}, "spec.output.maxHeight"),
        ({"ttl": "forever"}, "spec.ttl"),
        ({"ttl": "100000000d"}, "spec.ttl"),  # 274,000 years: every listing failed on it
        ({"ttl": "10000d"}, "spec.ttl"),
        ({"ttl": "9999999999s"}, "spec.ttl"),
        ({"compileRequest": -1}, "spec.compileRequest"),
    ],
)
def test_invalid_specs_are_rejected(
    api: ControlPlane, spec: dict[str, Any], complaint: str
) -> None:
    status, body = api.raw("POST", PATH, resource("invalid-0001", **spec))
    assert status == 422, body
    reply = json.loads(body)
    assert reply["reason"] == "Invalid"
    assert complaint in reply["message"], reply["message"]


@pytest.mark.parametrize("ttl", ["90s", "1h30m", "72h", "7d", "3650d", "87600h", "315360000s"])
def test_ttls_up_to_the_bound_are_accepted(api: ControlPlane, ttl: str) -> None:
    name = "ttl-" + ttl.replace(".", "-")
    created = api.request("POST", PATH, resource(f"{name:0<12}", ttl=ttl))
    assert created["spec"]["ttl"] == ttl


def test_unknown_fields_are_refused_when_strict(api: ControlPlane) -> None:
    body = resource("strict-00001", compiel=True)
    status, reply = api.raw("POST", f"{PATH}?fieldValidation=Strict", body)
    assert status in (400, 422) and b"compiel" in reply, reply


def test_session_id_is_immutable(api: ControlPlane) -> None:
    api.request("POST", PATH, resource("immutable-01", sessionId="session-aaaa1111"))
    status, reply = api.raw(
        "PATCH",
        f"{PATH}/immutable-01",
        {"spec": {"sessionId": "session-bbbb2222"}},
        content_type="application/merge-patch+json",
    )
    assert status == 422, reply
    assert b"spec.sessionId is immutable" in reply
    # Setting it where it was unset is a change too.
    api.request("POST", PATH, resource("immutable-02"))
    status, reply = api.raw(
        "PATCH",
        f"{PATH}/immutable-02",
        {"spec": {"sessionId": "session-cccc3333"}},
        content_type="application/merge-patch+json",
    )
    assert status == 422 and b"immutable" in reply
    # Other fields still change.
    patched = api.request(
        "PATCH",
        f"{PATH}/immutable-01",
        {"spec": {"compile": True, "compileRequest": 1}},
        content_type="application/merge-patch+json",
    )
    assert patched["spec"]["compile"] is True


def test_compile_request_only_grows(api: ControlPlane) -> None:
    api.request("POST", PATH, resource("requests-001", compileRequest=3))
    status, reply = api.raw(
        "PATCH",
        f"{PATH}/requests-001",
        {"spec": {"compileRequest": 2}},
        content_type="application/merge-patch+json",
    )
    assert status == 422 and b"compileRequest can only grow" in reply


def test_printer_columns_as_kubectl_gets_them(api: ControlPlane) -> None:
    api.request("POST", PATH, resource("printed-0001"))
    api.request(
        "PATCH",
        f"{PATH}/printed-0001/status",
        {"status": {"phase": "Ready", "expiresAt": "2030-01-01T00:00:00Z", "progress": 1}},
        content_type="application/merge-patch+json",
    )
    table = api.request("GET", PATH, headers={"Accept": TABLE})
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    for column in ("Name", "Phase", "Size", "Duration", "Expires", "Age"):
        assert column in names, names
    row = next(r for r in table["rows"] if r["cells"][0] == "printed-0001")
    assert row["cells"][names.index("Phase")] == "Ready"
    assert row["cells"][names.index("Expires")] == "2030-01-01T00:00:00Z"


def test_status_is_a_subresource(api: ControlPlane) -> None:
    api.request("POST", PATH, resource("subres-00001"))
    # A status change through the main resource is ignored...
    got = api.request(
        "PATCH",
        f"{PATH}/subres-00001",
        {"status": {"phase": "Ready"}},
        content_type="application/merge-patch+json",
    )
    assert "phase" not in got.get("status", {})
    # ...and validated through /status.
    status, reply = api.raw(
        "PATCH",
        f"{PATH}/subres-00001/status",
        {"status": {"phase": "Sparkling"}},
        content_type="application/merge-patch+json",
    )
    assert status == 422 and b"status.phase" in reply


def test_discovery_names(api: ControlPlane) -> None:
    group = api.request("GET", "/apis/tapedeck.io/v1alpha1")
    rs = next(r for r in group["resources"] if r["name"] == "recordingsessions")
    assert rs["namespaced"] is True
    assert rs["kind"] == "RecordingSession"
    assert "recsession" in rs["shortNames"]
    assert "tapedeck" in rs["categories"]
