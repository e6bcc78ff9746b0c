"""The chart's drain settings, HPAs, KEDA ScaledObject and Grafana dashboard.

`helm template` shows what each value renders; the rendered objects are then applied (server-
side apply, dry run, strict field validation) to the real API server of the cluster suite's
control plane, the ScaledObject against KEDA's own CRD from its Go module, so a field the real
schema does not know is refused. No node is needed. The dashboard's PromQL may name only
metrics `tapedeck.metrics` registers.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import tapedeck.metrics  # noqa: F401 -- registers every metric
from cluster.controlplane import ControlPlane
from cluster.helpers import CHART, Helm, create_namespace, delete_namespace, keda_crd, wait_until
from cluster.test_chart import by_kind, render

NS = "scaling-tests"
ON = (
    "--set=ingest.autoscaling.enabled=true,ingest.autoscaling.streams.enabled=true,"
    "api.autoscaling.enabled=true,dashboard.enabled=true"
)
Doc = dict[str, Any]


# --- PromQL against the registry --------------------------------------------------------------

NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
NOT_METRICS |= {"unless", "bool", "offset", "le", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names (in matchers or `by (...)`) or strings."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() not in NOT_METRICS:
            names.add(match.group())
    return names


def exposed() -> set[str]:
    """Every series name tapedeck's registry exposes (counters' `_total`, histograms'
    `_bucket`, `_sum`, `_count`)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("tapedeck_"):
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def test_metric_names_of_promql() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, pod) (rate(x_bucket{a="b",c=~"$d"}[5m])))'
    assert metric_names(expr) == {"x_bucket"}
    assert metric_names("sum(a) / on (pod) group_left b + c offset 5m") == {"a", "b", "c"}
    assert "tapedeck_nope_total" not in exposed()
    assert {"tapedeck_storage_free_bytes", "tapedeck_compile_total"} <= exposed()


def dashboard(docs: list[Doc]) -> Doc:
    configmap = by_kind(docs, "ConfigMap")["tapedeck-dashboard"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    board: Doc = json.loads(configmap["data"]["tapedeck.json"])
    return board


def test_dashboard_is_off_by_default_and_names_only_real_metrics(helm: Helm) -> None:
    assert "tapedeck-dashboard" not in by_kind(render(helm), "ConfigMap")
    board = dashboard(render(helm, ON))
    known = exposed()
    titles = []
    for panel in board["panels"]:
        titles.append(panel["title"])
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs, panel["title"]
        for expr in exprs:
            names = metric_names(expr)
            assert names, expr
            assert names <= known, f"{panel['title']}: {sorted(names - known)} do not exist"
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert selector is not None, variable["definition"]
            assert metric_names(selector.group(1)) <= known
    wanted = ["Live streams", "Ack latency", "Bytes in", "Compile queue", "Compile duration"]
    wanted += ["Failures", "Storage free space"]
    for part in wanted:
        assert any(part in t for t in titles), part
    free = next(p for p in board["panels"] if "free space" in p["title"])
    assert "by (replica)" in free["targets"][0]["expr"]


# --- drain, admission and autoscaling values --------------------------------------------------


def test_ingest_drains_within_its_grace_period(helm: Helm) -> None:
    docs = render(helm, "--set=ingest.drainTimeoutSeconds=45,ingest.maxStreams=120")
    pod = by_kind(docs, "Deployment")["tapedeck-ingest"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TAPEDECK_DRAIN_TIMEOUT"] == "45s"
    assert env["TAPEDECK_INGEST_MAX_STREAMS"] == "120"
    assert pod["terminationGracePeriodSeconds"] == 55  # the drain and the server's shutdown
    defaults = render(helm)
    pdb = by_kind(defaults, "PodDisruptionBudget")["tapedeck-ingest"]
    ingest = by_kind(defaults, "Deployment")["tapedeck-ingest"]["spec"]
    assert pdb["spec"]["minAvailable"] < ingest["replicas"]  # a node drain can proceed


def test_autoscaling_is_off_by_default(helm: Helm) -> None:
    docs = render(helm)
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    assert not by_kind(docs, "ScaledObject")
    assert by_kind(docs, "Deployment")["tapedeck-ingest"]["spec"]["replicas"] == 2


def test_hpas(helm: Helm) -> None:
    docs = render(helm, ON)
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"tapedeck-ingest", "tapedeck-api"}
    deployments = by_kind(docs, "Deployment")
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert "replicas" not in deployments[name]["spec"]  # the HPA owns the count
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pods = [m for m in hpas["tapedeck-ingest"]["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods[0]["pods"]["metric"]["name"] in exposed()
    assert len(hpas["tapedeck-api"]["spec"]["metrics"]) == 1  # CPU only


def test_keda_instead_of_the_hpa(helm: Helm) -> None:
    docs = render(helm, "--set=keda.enabled=true")
    scaled = by_kind(docs, "ScaledObject")["tapedeck-ingest"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "prometheus"
    assert metric_names(trigger["metadata"]["query"]) <= exposed()
    assert "tapedeck_ingest_active_streams" in trigger["metadata"]["query"]
    assert "replicas" not in by_kind(docs, "Deployment")["tapedeck-ingest"]["spec"]
    out = helm(
        "template", "tapedeck", str(CHART), "--set=keda.enabled=true",
        "--set=ingest.autoscaling.enabled=true", check=False,
    )  # fmt: skip
    assert "enable one of them" in out


# --- the real API server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(cluster: ControlPlane) -> Iterator[ControlPlane]:
    path = keda_crd()
    assert path.exists(), f"{path} missing: run tests/cluster/build-tools.sh"
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    status, reply = cluster.raw("POST", crds, yaml.safe_load(path.read_text()))
    assert status in (201, 409), reply[:500]
    wait_until(lambda: cluster.raw("GET", "/apis/keda.sh/v1alpha1")[0] == 200, 30, "KEDA's API")
    create_namespace(cluster, NS)
    yield cluster
    delete_namespace(cluster, NS)


def path_of(doc: Doc) -> str:
    group_version = doc["apiVersion"]
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = {
        "HorizontalPodAutoscaler": "horizontalpodautoscalers",
        "ScaledObject": "scaledobjects",
        "ConfigMap": "configmaps",
    }[doc["kind"]]
    return f"{base}/namespaces/{NS}/{plural}/{doc['metadata']['name']}"


def dry_apply(cluster: ControlPlane, doc: Doc) -> tuple[int, str]:
    status, reply = cluster.raw(
        "PATCH",
        path_of(doc) + "?fieldManager=tapedeck-tests&dryRun=All&fieldValidation=Strict",
        doc,
        content_type="application/apply-patch+yaml",
    )
    return status, reply.decode(errors="replace")


def test_the_api_server_accepts_the_rendered_objects(api: ControlPlane, helm: Helm) -> None:
    docs = render(helm, ON) + render(helm, "--set=keda.enabled=true")
    wanted = [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    wanted.append(by_kind(docs, "ConfigMap")["tapedeck-dashboard"])
    assert {d["kind"] for d in wanted} == {"HorizontalPodAutoscaler", "ScaledObject", "ConfigMap"}
    for doc in wanted:
        status, reply = dry_apply(api, doc)
        assert status in (200, 201), f"{doc['kind']} {doc['metadata']['name']}: {reply[:800]}"


def test_the_api_server_refuses_a_broken_field(api: ControlPlane, helm: Helm) -> None:
    scaled = by_kind(render(helm, "--set=keda.enabled=true"), "ScaledObject")["tapedeck-ingest"]
    unknown = copy.deepcopy(scaled)
    unknown["spec"]["maxReplicas"] = 6  # KEDA's is maxReplicaCount
    status, reply = dry_apply(api, unknown)
    # Server-side apply refuses a field the schema does not declare while it builds the typed
    # patch, which the API server reports as 500 (not 422), naming the field.
    assert status >= 400 and "maxReplicas" in reply and "not declared" in reply, reply[:800]
    typed = copy.deepcopy(scaled)
    typed["spec"]["minReplicaCount"] = "two"
    status, reply = dry_apply(api, typed)
    assert status >= 400 and "minReplicaCount" in reply, reply[:800]

    hpa = by_kind(render(helm, ON), "HorizontalPodAutoscaler")["tapedeck-ingest"]
    broken = copy.deepcopy(hpa)
    broken["spec"]["metrics"][0]["resource"]["target"]["type"] = "Percent"
    status, reply = dry_apply(api, broken)
    assert status == 422 and "Percent" in reply, reply[:800]
