"""The chart as rendered by the real helm: lint, schema, and what every variant must hold.

`helm template` output is checked, not the templates' text: restricted pod security, probes,
the operator's single Recreate replica, Services that select their pods, least-privilege RBAC,
and the NetworkPolicies, evaluated as a CNI would for each pair of pods that must (or must
not) talk.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.helpers import CHART, CI_VALUES, Helm
from tapedeck.compiler.plan import OutputOptions
from tapedeck.settings import S3Settings, Settings
from tapedeck_operator.jobs import build_job

EXTRA_APIS = ("gateway.networking.k8s.io/v1/HTTPRoute", "monitoring.coreos.com/v1")
Doc = dict[str, Any]


def render(helm: Helm, *args: str, apis: tuple[str, ...] = EXTRA_APIS) -> list[Doc]:
    flags = [f"--api-versions={a}" for a in apis]
    out = helm("template", "tapedeck", str(CHART), "--namespace=tapedeck", *flags, *args)
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[Doc], kind: str) -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs: list[Doc]) -> dict[str, Doc]:
    """Pod templates of the workloads, and the helm test pod."""
    specs = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            specs[d["metadata"]["name"]] = d["spec"]["template"]
        elif d["kind"] == "Pod":
            specs[d["metadata"]["name"]] = d
    return specs


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda p: p.name)
def variant(request: pytest.FixtureRequest, helm: Helm) -> tuple[Path, list[Doc]]:
    path: Path = request.param
    return path, render(helm, "-f", str(path))


def test_lint_strict(helm: Helm, variant: tuple[Path, list[Doc]]) -> None:
    path, _ = variant
    out = helm("lint", "--strict", str(CHART), "-f", str(path))
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_pods_are_restricted(variant: tuple[Path, list[Doc]]) -> None:
    _, docs = variant
    for name, pod in pod_specs(docs).items():
        spec = pod["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        mounts_tmp = False
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "limits" in c["resources"] and "requests" in c["resources"], name
            mounts_tmp |= any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
        if pod.get("kind") != "Pod":
            assert mounts_tmp, f"{name}: a read-only root needs an emptyDir /tmp"


def test_workloads(variant: tuple[Path, list[Doc]]) -> None:
    _, docs = variant
    deployments = by_kind(docs, "Deployment")
    operator = deployments["tapedeck-operator"]
    assert operator["spec"]["replicas"] == 1
    assert operator["spec"]["strategy"] == {"type": "Recreate"}
    container = operator["spec"]["template"]["spec"]["containers"][0]
    liveness = next(a for a in container["args"] if a.startswith("--liveness="))
    port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert liveness.endswith(f":{port['health']}/healthz")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}

    for role in ("ingest", "api"):
        pod = deployments[f"tapedeck-{role}"]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert c["args"] == ["serve", role]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        env = {e["name"]: e for e in c["env"]}
        assert env["TAPEDECK_MODE"]["value"] == "cluster"
        assert env["TAPEDECK_STORAGE_ADDR"]["value"] == "tapedeck-storage:50051"
        assert env["TAPEDECK_HOST"]["value"] == "0.0.0.0"
        assert "secretKeyRef" in env["TAPEDECK_SECRET_KEY"]["valueFrom"]
        assert len(env) == len(c["env"]), "an env var is set twice"

    storage = by_kind(docs, "StatefulSet")["tapedeck-storage"]
    assert storage["spec"]["replicas"] == 1
    claim = storage["spec"]["volumeClaimTemplates"][0]
    c = storage["spec"]["template"]["spec"]["containers"][0]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in c["volumeMounts"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TAPEDECK_DATA_DIR"] == "/data"
    assert env["TAPEDECK_STORAGE_ADDR"] == "0.0.0.0:50051"
    assert c["readinessProbe"]["grpc"]["port"] == 50051


def test_services_select_their_pods(variant: tuple[Path, list[Doc]]) -> None:
    _, docs = variant
    workloads = {
        d["metadata"]["name"]: d["spec"]["template"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    for name, svc in by_kind(docs, "Service").items():
        selected = [
            w
            for w, t in workloads.items()
            if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, f"{name} selects {selected}"
        ports = {
            p["name"] for c in workloads[selected[0]]["spec"]["containers"] for p in c["ports"]
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: no container port {port['targetPort']}"


def test_disruption_budgets(variant: tuple[Path, list[Doc]]) -> None:
    path, docs = variant
    pdbs = by_kind(docs, "PodDisruptionBudget")
    if "no-networkpolicy" in path.name:  # that variant turns them off with one replica
        assert not pdbs
        return
    assert set(pdbs) == {"tapedeck-ingest", "tapedeck-api"}
    deployments = by_kind(docs, "Deployment")
    for name, pdb in pdbs.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"]["minAvailable"] < deployments[name]["spec"]["replicas"]


def test_rbac_is_least_privilege(variant: tuple[Path, list[Doc]]) -> None:
    _, docs = variant
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = by_kind(docs, "Role")

    def rules(role: str) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for rule in roles[role]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    out.setdefault((group, resource), set()).update(rule["verbs"])
        return out

    operator = rules("tapedeck-operator")
    assert operator[("tapedeck.io", "recordingsessions")] == {
        "get",
        "list",
        "watch",
        "patch",
        "delete",
    }
    assert operator[("tapedeck.io", "recordingsessions/status")] == {"get", "patch"}
    assert operator[("tapedeck.io", "recordingsessions/finalizers")] == {"update"}
    # delete: only a follower Job that must stop before a one-shot compile (followers.py).
    assert operator[("batch", "jobs")] == {"create", "get", "list", "watch", "delete"}
    assert operator[("", "events")] == {"create"}
    # Nothing else: no pods, no secrets, no update (kopf patches), nothing cluster-wide.
    assert len(operator) == 5, operator
    api = rules("tapedeck-api")
    assert api == {
        ("tapedeck.io", "recordingsessions"): {"create", "get", "list", "patch", "delete"}
    }
    for binding in by_kind(docs, "RoleBinding").values():
        assert binding["subjects"][0]["name"] == binding["roleRef"]["name"]
    # Only the processes that call the Kubernetes API get a token.
    for name, pod in pod_specs(docs).items():
        wants = name in ("tapedeck-api", "tapedeck-operator")
        assert pod["spec"].get("automountServiceAccountToken") is wants, name


def test_ingress_routes_websockets_to_ingest(helm: Helm) -> None:
    docs = render(helm, "-f", str(CHART / "ci" / "ingress-token-values.yaml"))
    ingress = by_kind(docs, "Ingress")["tapedeck"]
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert notes["nginx.ingress.kubernetes.io/proxy-send-timeout"] == "3600"
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for p in ingress["spec"]["rules"][0]["http"]["paths"]
    }
    assert paths == {"/ws": "tapedeck-ingest", "/": "tapedeck-api"}
    assert ingress["spec"]["tls"][0]["secretName"] == "tapedeck-tls"
    secret = by_kind(docs, "Secret")["tapedeck-secret"]
    assert set(secret["data"]) == {"secret-key", "api-token"}


def test_ingress_serves_tls_on_traefik(helm: Helm) -> None:
    """Traefik attaches an Ingress's routers to TLS only when told so: without the annotation
    a TLS-only entry point answers 404 however spec.tls is set (the browser-through-ingress test
    in test_ingress_browser.py runs that path for real). nginx's annotations stay, and an
    Ingress without TLS gets no TLS-only router."""
    values = CHART / "ci" / "ingress-traefik-values.yaml"
    ingress = by_kind(render(helm, "-f", str(values)), "Ingress")["tapedeck"]
    notes = ingress["metadata"]["annotations"]
    assert notes["traefik.ingress.kubernetes.io/router.tls"] == "true"
    assert notes["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert notes["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert ingress["spec"]["tls"] == [
        {"secretName": "tapedeck-tls", "hosts": ["tapedeck.ci.example"]}
    ]

    plain = render(helm, "--set=ingress.enabled=true,ingress.className=traefik")
    assert (
        "traefik.ingress.kubernetes.io/router.tls"
        not in (by_kind(plain, "Ingress")["tapedeck"]["metadata"]["annotations"])
    )


def test_gateway_route(helm: Helm) -> None:
    values = CHART / "ci" / "gateway-values.yaml"
    route = by_kind(render(helm, "-f", str(values)), "HTTPRoute")["tapedeck"]
    rules = {r["matches"][0]["path"]["value"]: r for r in route["spec"]["rules"]}
    assert rules["/ws"]["backendRefs"][0]["name"] == "tapedeck-ingest"
    assert rules["/ws"]["timeouts"]["request"] == "0s"
    assert rules["/"]["backendRefs"][0]["name"] == "tapedeck-api"
    # Without the Gateway API in the cluster, the chart says so instead of failing on apply.
    out = helm("template", "tapedeck", str(CHART), "-f", str(values), check=False)
    assert "needs the Gateway API" in out


def test_service_monitor_only_where_served(helm: Helm) -> None:
    assert by_kind(render(helm), "ServiceMonitor").keys() == {
        "tapedeck-storage",
        "tapedeck-ingest",
        "tapedeck-api",
    }
    assert not by_kind(render(helm, apis=()), "ServiceMonitor")
    assert not by_kind(render(helm, "--set=serviceMonitor.enabled=false"), "ServiceMonitor")


@pytest.mark.parametrize(
    "setting",
    [
        "ingest.replicas=0",
        "config.sessionTTL=forever",
        "config.sessionTTL=100000000d",
        "image.pullPolicy=Sometimes",
        "operator.compile.maxAttempts=0",
        "operator.followers.max=-1",
        "operator.followers.timeout=forever",
        "storage.persistence.size=lots",
        "unknownKey=1",
        "gateway.enabled=true",  # without parentRefs
        "ingress.enabled=true,ingress.host=",
        "auth.allowAnonymous=yes",
    ],
)
def test_schema_rejects(helm: Helm, setting: str) -> None:
    out = helm("template", "t", str(CHART), f"--set={setting}", check=False)
    assert "values don't meet the specifications of the schema" in out, out[-800:]


def container_env(docs: list[Doc], name: str) -> dict[str, Doc]:
    pod = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
    return {e["name"]: e for e in pod["containers"][0]["env"]}


def test_follower_values_reach_the_operator(helm: Helm) -> None:
    env = container_env(render(helm), "tapedeck-operator")
    assert env["TAPEDECK_OPERATOR_FOLLOWERS_MAX"]["value"] == "20"
    assert env["TAPEDECK_FOLLOWER_TIMEOUT"]["value"] == "6h30m"
    assert json.loads(env["TAPEDECK_FOLLOWER_RESOURCES"]["value"]) == {
        "requests": {"cpu": "50m", "memory": "320Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    off = container_env(render(helm, "--set=operator.followers.max=0"), "tapedeck-operator")
    assert off["TAPEDECK_OPERATOR_FOLLOWERS_MAX"]["value"] == "0"


def test_existing_secret_is_used(helm: Helm) -> None:
    docs = render(helm, "--set=auth.existingSecret=mine")
    assert not by_kind(docs, "Secret")
    env = container_env(docs, "tapedeck-api")
    assert env["TAPEDECK_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    # The api refuses to start without a token, so the Secret must hold one.
    assert env["TAPEDECK_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "mine",
        "key": "api-token",
        "optional": False,
    }
    anonymous = container_env(
        render(helm, "--set=auth.existingSecret=mine,auth.allowAnonymous=true"), "tapedeck-api"
    )
    assert anonymous["TAPEDECK_API_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert anonymous["TAPEDECK_ALLOW_ANONYMOUS"]["value"] == "true"


def test_default_install_generates_an_api_token(helm: Helm) -> None:
    """A default install must not serve /api to anyone who reaches it (issue 13, item 15)."""
    tokens = []
    for _ in range(2):
        docs = render(helm)
        secret = by_kind(docs, "Secret")["tapedeck-secret"]
        token = base64.b64decode(secret["data"]["api-token"]).decode()
        assert len(token) >= 32 and token.isalnum(), token
        tokens.append(token)
        for name in ("tapedeck-api", "tapedeck-ingest", "tapedeck-operator"):
            env = container_env(docs, name)
            ref = env["TAPEDECK_API_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "tapedeck-secret" and ref["key"] == "api-token", name
            assert not ref.get("optional"), name
            assert "TAPEDECK_ALLOW_ANONYMOUS" not in env, name
    assert tokens[0] != tokens[1], "the token must be random, not a constant of the chart"
    # NOTES.txt (how to read the token) is checked where helm prints it: test_install.py.


def test_explicit_api_token_is_kept(helm: Helm) -> None:
    secret = by_kind(render(helm, "--set=auth.apiToken=mine-0123"), "Secret")["tapedeck-secret"]
    assert base64.b64decode(secret["data"]["api-token"]) == b"mine-0123"


def test_allow_anonymous_renders_no_token(helm: Helm) -> None:
    docs = render(helm, "--set=auth.allowAnonymous=true")
    secret = by_kind(docs, "Secret")["tapedeck-secret"]
    assert set(secret["data"]) == {"secret-key"}
    for name in ("tapedeck-api", "tapedeck-ingest"):
        env = container_env(docs, name)
        assert "TAPEDECK_API_TOKEN" not in env, name
        assert env["TAPEDECK_ALLOW_ANONYMOUS"]["value"] == "true", name
    # Both at once is a contradiction, said as such.
    out = helm(
        "template",
        "t",
        str(CHART),
        "--set=auth.allowAnonymous=true,auth.apiToken=x",
        check=False,
    )
    assert "auth.allowAnonymous" in out and "auth.apiToken" in out, out[-800:]
    assert "kind: Deployment" not in out


SERVICE_NAMES = [
    f"tapedeck-{role}{suffix}"
    for role in ("api", "ingest")
    for suffix in ("", ".tapedeck", ".tapedeck.svc", ".tapedeck.svc.cluster.local")
]


def allowed_hosts(docs: list[Doc], prefix: str = "tapedeck") -> list[str]:
    """TAPEDECK_ALLOWED_HOSTS of ingest and api (the same list for both)."""
    found = {
        role: container_env(docs, f"{prefix}-{role}")["TAPEDECK_ALLOWED_HOSTS"]["value"]
        for role in ("api", "ingest")
    }
    assert found["api"] == found["ingest"], found
    hosts: list[str] = found["api"].split(",")
    assert len(hosts) == len(set(hosts)) and all(h.strip() == h and h for h in hosts), hosts
    return hosts


def test_allowed_hosts_name_the_services_and_the_front_doors(helm: Helm) -> None:
    """ingest and api refuse a Host they do not know (DNS rebinding, issue 13 item 2): the
    chart names its Services (helm test calls the api through one), the Ingress host and the
    Gateway's hostnames."""
    default = allowed_hosts(render(helm))
    assert sorted(default) == sorted(SERVICE_NAMES)  # not ingress.host: the ingress is off
    for docs in (render(helm), render(helm, "--set=auth.allowAnonymous=true")):
        assert "TAPEDECK_ALLOWED_HOSTS" not in {
            e["name"]
            for e in by_kind(docs, "StatefulSet")["tapedeck-storage"]["spec"]["template"]["spec"][
                "containers"
            ][0]["env"]
        }

    ingress = allowed_hosts(render(helm, "-f", str(CHART / "ci" / "ingress-token-values.yaml")))
    assert sorted(ingress) == sorted([*SERVICE_NAMES, "tapedeck.ci.example"])

    gateway = render(
        helm,
        "-f",
        str(CHART / "ci" / "gateway-values.yaml"),
        '--set-json=gateway.hostnames=["rec.example.org","*.rec.example.net"]',
    )
    assert sorted(allowed_hosts(gateway)) == sorted(
        [*SERVICE_NAMES, "rec.example.org", ".rec.example.net"]
    )

    extra = render(
        helm,
        "--namespace=media",
        "--set=fullnameOverride=rec",
        '--set-json=config.allowedHosts=["lb.example.org",".corp.example"]',
    )
    assert sorted(allowed_hosts(extra, "rec")) == sorted(
        [
            *(s.replace("tapedeck-", "rec-").replace(".tapedeck", ".media") for s in SERVICE_NAMES),
            "lb.example.org",
            ".corp.example",
        ]
    )


@pytest.mark.parametrize(
    "setting", ['["has,comma"]', '["with space"]', '[""]', '["http://x.example"]', '"x"']
)
def test_allowed_hosts_schema(helm: Helm, setting: str) -> None:
    out = helm(
        "template", "t", str(CHART), f"--set-json=config.allowedHosts={setting}", check=False
    )
    assert "values don't meet the specifications of the schema" in out, out[-800:]


def test_trusted_proxies_reach_ingest_and_api(helm: Helm) -> None:
    def trusted(*args: str) -> dict[str, str | None]:
        deployments = by_kind(render(helm, *args), "Deployment")
        found = {}
        for role in ("ingest", "api"):
            pod = deployments[f"tapedeck-{role}"]["spec"]["template"]["spec"]
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            found[role] = env.get("TAPEDECK_TRUSTED_PROXIES")
        return found

    assert trusted() == {"ingest": None, "api": None}  # default: X-Forwarded-For ignored
    cidrs = "10.42.0.0/16,10.43.0.7"
    escaped = cidrs.replace(",", r"\,")  # helm --set splits on unescaped commas
    assert trusted(f"--set-string=config.trustedProxies={escaped}") == {
        "ingest": cidrs,
        "api": cidrs,
    }


# --- NetworkPolicy, evaluated ---


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


def _port_ok(rule: Doc, port: int, named: str | None) -> bool:
    ports = rule.get("ports")
    return not ports or any(p["port"] in (port, named) for p in ports)


def _peer_ok(rule: Doc, key: str, peer: dict[str, str] | None) -> bool:
    """`peer` None stands for something outside the cluster's pods (the API server)."""
    peers = rule.get(key)
    if peers is None:
        return True
    for p in peers:
        if peer is None and "ipBlock" in p:
            return True
        if peer is not None and "podSelector" in p and "namespaceSelector" not in p:
            if _selects(p["podSelector"], peer):
                return True
    return False


def allowed(
    policies: list[Doc],
    src: dict[str, str] | None,
    dst: dict[str, str] | None,
    port: int,
    named: str | None = None,
) -> bool:
    """Would a NetworkPolicy-enforcing CNI let src open a connection to dst:port?"""
    for side, pod, key, other in (("Egress", src, "egress", dst), ("Ingress", dst, "ingress", src)):
        if pod is None:
            continue
        applying = [
            p
            for p in policies
            if side in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
        ]
        if not applying:
            continue  # not isolated in this direction
        rules = [r for p in applying for r in p["spec"].get(key, [])]
        peer_key = "to" if key == "egress" else "from"
        if not any(_port_ok(r, port, named) and _peer_ok(r, peer_key, other) for r in rules):
            return False
    return True


def compile_pod_labels(docs: list[Doc], operator: str) -> dict[str, str]:
    """The labels of the compile pods this render's operator makes: its own Job builder, with
    the settings the chart gives it."""
    env = container_env(docs, operator)
    settings = Settings(
        storage_addr=env["TAPEDECK_STORAGE_ADDR"]["value"],
        instance=env.get("TAPEDECK_INSTANCE", {}).get("value", ""),
    )
    owner = {"metadata": {"name": "s", "namespace": "tapedeck", "uid": "u"}}
    job = build_job(owner, "session-1", 1, OutputOptions(), settings)
    labels: dict[str, str] = job["spec"]["template"]["metadata"]["labels"]
    return labels


def test_network_policies(helm: Helm) -> None:
    docs = render(helm)
    policies = list(by_kind(docs, "NetworkPolicy").values())
    labels = {
        name.removeprefix("tapedeck-"): pod["metadata"]["labels"]
        for name, pod in pod_specs(docs).items()
    }
    labels["test"] = labels.pop("test-readyz")
    labels["compile"] = compile_pod_labels(docs, "tapedeck-operator")
    stranger = {"app": "something-else"}

    for client in ("ingest", "api", "operator", "compile"):
        assert allowed(policies, labels[client], labels["storage"], 50051, "grpc"), client
    assert allowed(policies, labels["test"], labels["api"], 8080, "http")
    for src, dst, port in [
        ("storage", "api", 8080),
        ("compile", "api", 8080),
        ("ingest", "api", 8080),
        ("test", "storage", 50051),
        ("api", "ingest", 8080),
    ]:
        assert not allowed(policies, labels[src], labels[dst], port, "http"), (src, dst)
    assert not allowed(policies, stranger, labels["storage"], 50051, "grpc")
    # The API server: the operator and the api reach it, nothing else.
    assert allowed(policies, labels["operator"], None, 443)
    assert allowed(policies, labels["api"], None, 6443)
    for other in ("storage", "ingest", "compile"):
        assert not allowed(policies, labels[other], None, 443), other
    # ingest and api from the ingress controller's namespace only (a namespaceSelector peer).
    ingress_rules = [
        r
        for p in policies
        if p["metadata"]["name"] == "tapedeck-ingest"
        for r in p["spec"]["ingress"]
    ]
    assert ingress_rules[0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert not allowed(policies, stranger, labels["ingest"], 8080, "http")

    off = render(helm, "--set=networkPolicy.enabled=false")
    assert not by_kind(off, "NetworkPolicy")


def test_metrics_from_reaches_every_metrics_port(helm: Helm) -> None:
    """`networkPolicy.metricsFrom` lets a scraper (a pod labelled `app: prometheus`) reach each
    port a ServiceMonitor or PodMonitor names, the operator's compile metrics included."""
    docs = render(helm, "--set=networkPolicy.metricsFrom[0].podSelector.matchLabels.app=prometheus")
    policies = list(by_kind(docs, "NetworkPolicy").values())
    pods = {name.removeprefix("tapedeck-"): pod for name, pod in pod_specs(docs).items()}
    scraper = {"app": "prometheus"}
    for name in ("storage", "ingest", "api", "operator"):
        ports = [
            p
            for c in pods[name]["spec"]["containers"]
            for p in c.get("ports", [])
            if p["name"] in ("metrics", "http")
        ]
        assert ports, name
        for port in ports:
            assert allowed(
                policies,
                scraper,
                pods[name]["metadata"]["labels"],
                port["containerPort"],
                port["name"],
            ), (name, port)
    assert not allowed(
        policies, {"app": "other"}, pods["operator"]["metadata"]["labels"], 9090, "metrics"
    )


def test_schema_is_json(helm: Helm) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


def test_storage_replicas(helm: Helm) -> None:
    """`storage.replicas: N`: one StatefulSet, a volume per replica, each pod told its index,
    and every replica's own address (the headless Service's pod names) given to the processes
    that reach storage, replica 0 first. One replica changes nothing."""
    single = render(helm)
    assert by_kind(single, "StatefulSet")["tapedeck-storage"]["spec"]["replicas"] == 1
    for name in ("tapedeck-ingest", "tapedeck-api", "tapedeck-operator"):
        assert "TAPEDECK_STORAGE_ADDRS" not in container_env(single, name)
    docs = render(helm, "--set=storage.replicas=3")
    storage = by_kind(docs, "StatefulSet")["tapedeck-storage"]
    assert storage["spec"]["replicas"] == 3
    assert storage["spec"]["serviceName"] == "tapedeck-storage-headless"
    assert [t["metadata"]["name"] for t in storage["spec"]["volumeClaimTemplates"]] == ["data"]
    headless = by_kind(docs, "Service")["tapedeck-storage-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    env = {e["name"]: e for e in storage["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TAPEDECK_STORAGE_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    addrs = ",".join(f"tapedeck-storage-{i}.tapedeck-storage-headless:50051" for i in range(3))
    for name in ("tapedeck-ingest", "tapedeck-api", "tapedeck-operator"):
        assert container_env(docs, name)["TAPEDECK_STORAGE_ADDRS"]["value"] == addrs
    # what the processes make of it: three replicas, in that order
    assert Settings(storage_addrs=addrs).replica_addrs() == addrs.split(",")  # type: ignore[arg-type]
    out = helm("template", "t", str(CHART), "--set=storage.replicas=0", check=False)
    assert "replicas" in out


def test_object_store(helm: Helm) -> None:
    """`objectStore.bucket` set: storage, ingest, api and the operator get the tier's settings
    (credentials from the existing Secret), as S3Settings reads them, and egress to the store's
    port; without a bucket, nothing of it is rendered."""
    plain = render(helm)
    for name in ("tapedeck-ingest", "tapedeck-api", "tapedeck-operator"):
        assert not {k for k in container_env(plain, name) if "S3" in k or "AWS" in k}, name
    assert "tapedeck-to-object-store" not in by_kind(plain, "NetworkPolicy")
    docs = render(
        helm,
        "--set=objectStore.bucket=recordings,objectStore.prefix=td/,objectStore.existingSecret=s3",
        "--set=objectStore.endpoint=http://seaweedfs-s3.storage:8333,objectStore.downloads=redirect",
        "--set=objectStore.publicEndpoint=https://s3.example.com",
        "--set=networkPolicy.objectStore.ports={8333}",
    )
    storage = by_kind(docs, "StatefulSet")["tapedeck-storage"]["spec"]["template"]["spec"]
    envs = {"tapedeck-storage": {e["name"]: e for e in storage["containers"][0]["env"]}}
    for name in ("tapedeck-ingest", "tapedeck-api", "tapedeck-operator"):
        envs[name] = container_env(docs, name)
    for name, env in envs.items():
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3", "key": key}, name
        values = {k: e["value"] for k, e in env.items() if "value" in e}
        values |= {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
        with pytest.MonkeyPatch.context() as env_of:
            for key, value in values.items():
                env_of.setenv(key, value)
            s3 = S3Settings()
        assert (s3.bucket, s3.prefix, s3.downloads) == ("recordings", "td/", "redirect"), name
        assert s3.endpoint_url == "http://seaweedfs-s3.storage:8333", name
        assert s3.public_endpoint == "https://s3.example.com", name
    policies = list(by_kind(docs, "NetworkPolicy").values())
    labels = {
        name.removeprefix("tapedeck-"): pod["metadata"]["labels"]
        for name, pod in pod_specs(docs).items()
    }
    for src in ("storage", "ingest", "api", "operator"):
        assert allowed(policies, labels[src], None, 8333), src
        assert not allowed(policies, labels[src], None, 9000), src
    assert not allowed(policies, labels["test-readyz"], None, 8333)
    for bad in ("objectStore.bucket=Bad_Name", "objectStore.partSize=1024"):
        out = helm("template", "t", str(CHART), f"--set={bad}", check=False)
        assert "values don't meet the specifications of the schema" in out, out[-800:]


def test_downloads_go_through_the_store_when_browsers_can_reach_it(helm: Helm) -> None:
    """`objectStore.downloads: auto` (the default): a 307 to a presigned GET when browsers can
    reach the store (AWS S3, or a `publicEndpoint`), the api's proxy when the store is known
    only by a cluster-internal endpoint; an explicit choice always wins."""
    bucket = "--set=objectStore.bucket=recordings"
    internal = "--set=objectStore.endpoint=http://seaweedfs-s3.storage:8333"
    public = "--set=objectStore.publicEndpoint=https://s3.example.com"
    cases = {
        (bucket,): "redirect",  # AWS S3: browsers reach it
        (bucket, internal): "proxy",
        (bucket, internal, public): "redirect",
        (bucket, public, "--set=objectStore.downloads=proxy"): "proxy",
        (bucket, internal, "--set=objectStore.downloads=redirect"): "redirect",
    }
    for args, expected in cases.items():
        env = container_env(render(helm, *args), "tapedeck-api")
        assert env["TAPEDECK_S3_DOWNLOADS"]["value"] == expected, args


def test_two_releases_in_one_namespace_keep_to_their_own_compile_pods(helm: Helm) -> None:
    """Each release's storage takes its own compile pods and not the other release's, with both
    releases' policies in force in the namespace (the compile selector has the instance)."""
    prefixes = {"tapedeck": "tapedeck", "second": "second-tapedeck"}  # their fullnames
    renders = {
        release: [
            d
            for d in yaml.safe_load_all(
                helm("template", release, str(CHART), "--namespace=tapedeck")
            )
            if d
        ]
        for release in prefixes
    }
    policies = [p for docs in renders.values() for p in by_kind(docs, "NetworkPolicy").values()]
    storage = {
        release: pod_specs(docs)[f"{prefixes[release]}-storage"]["metadata"]["labels"]
        for release, docs in renders.items()
    }
    compile_pods = {
        release: compile_pod_labels(docs, f"{prefixes[release]}-operator")
        for release, docs in renders.items()
    }
    for release, other in (("tapedeck", "second"), ("second", "tapedeck")):
        assert not allowed(policies, compile_pods[other], storage[release], 50051, "grpc"), (
            f"{other}'s compile pods reach {release}'s storage"
        )
        assert allowed(policies, compile_pods[release], storage[release], 50051, "grpc")
        assert compile_pods[release]["app.kubernetes.io/instance"] == release
