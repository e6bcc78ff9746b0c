"""A node agent for the cluster tests: the scheduler and the kubelet of one fake node.

There is no container runtime here, so a pod's containers run as local processes:

- it registers a Node (Ready, never tainted: no node-lifecycle controller runs) and binds every
  pending pod to it (POST pods/{name}/binding, as kube-scheduler does);
- each pod gets its own loopback address (127.0.1.N) as its pod IP, so two pods can listen
  on the same port, as they would in their own network namespaces;
- a container's `command` and `args` run with its `env` (value, $(VAR) expansion, fieldRef,
  secretKeyRef, configMapKeyRef, envFrom) as a local process. `--command NAME=PATH` maps an
  image's programs (tapedeck, python) to the local ones;
- what a pod's network and filesystem would provide is emulated by rewriting the values the
  process gets: `0.0.0.0`/`[::]` become the pod IP; `<service>[.<ns>[.svc[.cluster.local]]]:
  <port>` becomes `<ip of a pod behind that Service>:<its targetPort>` (DNS + kube-proxy);
  a volume's mountPath becomes a local directory (a PVC's lives as long as the claim, an
  emptyDir as long as the pod); `--image-path /app/frontend=DIR` maps a path in the image;
- a pod whose ServiceAccount token is mounted gets a real bound token (TokenRequest, bound to
  the pod) in a kubeconfig named by KUBECONFIG: the process authenticates as that account,
  so the chart's RBAC is what it gets;
- readiness, startup and liveness probes (httpGet, grpc, tcpSocket) run against the pod IP;
  a failing liveness probe restarts the container, as the kubelet does;
- status (phase, conditions, pod IP, container states with exit codes and restart counts) is
  written to pods/{name}/status; a process that exits is restarted or ends the pod as its
  restartPolicy says; a pod being deleted gets SIGTERM, then SIGKILL after its grace period
  (at most 10 s here), and is then removed (delete with grace 0, as the kubelet confirms).

Run: python agent.py --kubeconfig ADMIN --state-dir DIR [--command tapedeck=...]. It stops on
SIGTERM, after stopping every process it started (by PID).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes

log = logging.getLogger("agent")

Json = dict[str, Any]
TICK = 0.25
MAX_GRACE = 10.0
NODE_IP = "127.0.0.1"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """Plain-JSON calls through the kubernetes client's configured ApiClient."""

    def __init__(self, kubeconfig: str) -> None:
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)  # type: ignore[no-untyped-call]
        self.config = config
        self.client = kubernetes.client.ApiClient(config)

    def call(self, method: str, path: str, body: Any = None, content_type: str = "") -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        request = self.client.param_serialize(
            method=method,
            resource_path=path,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            reply = self.client.call_api(*request, _request_timeout=(5, 30))
            reply.read()  # type: ignore[no-untyped-call]
        except kubernetes.client.ApiException as err:
            raise ApiError(err.status, err.body) from None
        if not 200 <= reply.status <= 299:
            raise ApiError(reply.status, reply.data)
        data = reply.data
        return json.loads(data) if data else None

    def merge_patch(self, path: str, body: Json) -> Any:
        return self.call("PATCH", path, body, "application/merge-patch+json")


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"{status}: {str(body)[:300]}")
        self.status = status


@dataclass
class Container:
    spec: Json
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    exit_code: int | None = None
    finished_at: str = ""
    reason: str = ""
    waiting: str = "ContainerCreating"
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    next_start: float = 0.0
    probe_due: dict[str, float] = field(default_factory=dict)
    probe_failures: dict[str, int] = field(default_factory=dict)
    stopping_since: float = 0.0
    started_mono: float = 0.0


@dataclass
class PodRunner:
    pod: Json
    ip: str
    root: Path
    containers: list[Container]
    start_time: str = field(default_factory=now)
    terminal: str = ""  # "Succeeded" | "Failed" once the pod is done
    last_status: str = ""
    deleting_since: float = 0.0

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"


class Agent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.api = Api(args.kubeconfig)
        self.node = args.node_name
        self.state = Path(args.state_dir)
        self.commands = dict(item.split("=", 1) for item in args.command)
        self.image_paths = dict(item.split("=", 1) for item in args.image_path)
        self.runners: dict[str, PodRunner] = {}
        self.ips: dict[str, str] = {}
        self.next_ip = 1
        self.stopping = False
        self.version = args.kubelet_version
        kubeconfig = json.loads(Path(args.kubeconfig).read_text())
        self.server = kubeconfig["clusters"][0]["cluster"]["server"]
        self.ca_data = kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]

    # --- node and scheduling ---

    def register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "tapedeck.io/test-agent": "true",
                },
            },
        }
        try:
            self.api.call("POST", "/api/v1/nodes", node)
        except ApiError as err:
            if err.status != 409:
                raise
        resources = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        self.api.merge_patch(
            f"/api/v1/nodes/{self.node}/status",
            {
                "status": {
                    "capacity": resources,
                    "allocatable": resources,
                    "addresses": [
                        {"type": "InternalIP", "address": NODE_IP},
                        {"type": "Hostname", "address": self.node},
                    ],
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "tapedeck test agent",
                            "lastHeartbeatTime": now(),
                            "lastTransitionTime": now(),
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": self.version,
                        "kubeProxyVersion": "",
                        "operatingSystem": "linux",
                        "architecture": "amd64",
                        "containerRuntimeVersion": "local-process://1",
                        "osImage": "tapedeck test agent",
                        "kernelVersion": os.uname().release,
                        "machineID": "",
                        "systemUUID": "",
                        "bootID": "",
                    },
                }
            },
        )

    def bind(self, pod: Json) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        try:
            self.api.call(
                "POST", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body
            )
            log.info("bound %s/%s", meta["namespace"], meta["name"])
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("binding %s/%s: %s", meta["namespace"], meta["name"], err)

    def ip_for(self, uid: str) -> str:
        if uid not in self.ips:
            n = self.next_ip
            self.next_ip += 1
            self.ips[uid] = f"127.0.{1 + n // 250}.{1 + n % 250}"
        return self.ips[uid]

    # --- the loop ---

    def run(self) -> None:
        self.register_node()
        log.info("node %s registered", self.node)
        while not self.stopping:
            try:
                self.tick()
            except Exception:
                log.exception("tick failed")
            time.sleep(TICK)
        self.shutdown()

    def tick(self) -> None:
        pods = self.api.call("GET", "/api/v1/pods")["items"]
        self.pods = pods
        self.services: dict[str, list[Json]] = {}
        seen = set()
        for pod in pods:
            spec, meta = pod["spec"], pod["metadata"]
            if not spec.get("nodeName"):
                if not meta.get("deletionTimestamp"):
                    self.bind(pod)
                continue
            if spec["nodeName"] != self.node:
                continue
            seen.add(meta["uid"])
            runner = self.runners.get(meta["uid"])
            if runner is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if meta.get("deletionTimestamp"):
                        self.remove(pod)
                    continue
                runner = self.new_runner(pod)
            runner.pod = pod
            self.step(runner)
        for uid in list(self.runners):
            if uid not in seen:  # gone from the API: stop what is left
                runner = self.runners.pop(uid)
                for c in runner.containers:
                    self.kill(c, force=True)

    def new_runner(self, pod: Json) -> PodRunner:
        uid = pod["metadata"]["uid"]
        root = self.state / "pods" / f"{pod['metadata']['namespace']}_{pod['metadata']['name']}"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        runner = PodRunner(
            pod=pod,
            ip=self.ip_for(uid),
            root=root,
            containers=[Container(spec=c) for c in pod["spec"]["containers"]],
        )
        self.runners[uid] = runner
        log.info("pod %s gets %s", runner.key, runner.ip)
        return runner

    def step(self, runner: PodRunner) -> None:
        pod = runner.pod
        if pod["metadata"].get("deletionTimestamp"):
            self.terminate(runner)
            return
        restart = pod["spec"].get("restartPolicy", "Always")
        if not runner.terminal:
            for c in runner.containers:
                self.step_container(runner, c, restart)
            if restart != "Always" and all(
                c.exit_code is not None and c.process is None for c in runner.containers
            ):
                if restart == "Never" or all(c.exit_code == 0 for c in runner.containers):
                    ok = all(c.exit_code == 0 for c in runner.containers)
                    runner.terminal = "Succeeded" if ok else "Failed"
                    log.info("pod %s %s", runner.key, runner.terminal)
        self.report(runner)

    def step_container(self, runner: PodRunner, c: Container, restart: str) -> None:
        if c.process is not None:
            code = c.process.poll()
            if code is None:
                self.probe(runner, c)
                return
            log.info("%s/%s exited %s", runner.key, c.spec["name"], code)
            c.process, c.exit_code, c.finished_at = None, code, now()
            c.reason = "Completed" if code == 0 else "Error"
            c.ready = c.started = False
            if restart == "Always" or (restart == "OnFailure" and code != 0):
                c.restarts += 1
                c.next_start = time.monotonic() + min(10.0, 0.5 * 2 ** min(c.restarts, 5))
            return
        if c.exit_code is not None and (
            restart == "Never" or (restart == "OnFailure" and c.exit_code == 0)
        ):
            return
        if time.monotonic() >= c.next_start:
            self.start(runner, c)

    # --- processes ---

    def start(self, runner: PodRunner, c: Container) -> None:
        try:
            argv, env = self.prepare(runner, c.spec)
        except Waiting as wait:
            if c.waiting != wait.reason:
                log.info("%s/%s waiting: %s", runner.key, c.spec["name"], wait)
            c.waiting = wait.reason
            c.next_start = time.monotonic() + 0.5
            return
        logfile = runner.root / f"{c.spec['name']}.log"
        with open(logfile, "ab") as out:
            out.write(f"--- {now()} {argv}\n".encode())
            out.flush()
            c.process = subprocess.Popen(
                argv,
                env=env,
                cwd=runner.root,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        log.info("%s/%s started pid %d: %s", runner.key, c.spec["name"], c.process.pid, argv)
        c.started_at, c.exit_code, c.waiting = now(), None, ""
        c.started_mono, c.stopping_since = time.monotonic(), 0.0
        c.probe_due.clear()
        c.probe_failures.clear()
        c.started = "startupProbe" not in c.spec
        c.ready = False

    def kill(self, c: Container, force: bool = False) -> bool:
        """SIGTERM the process group we started (by its PID), SIGKILL after MAX_GRACE."""
        if c.process is None:
            return True
        if c.process.poll() is not None:
            c.exit_code, c.process = c.process.returncode, None
            c.finished_at, c.reason = now(), "Completed" if c.exit_code == 0 else "Error"
            return True
        if not c.stopping_since:
            c.stopping_since = time.monotonic()
            self.signal(c.process.pid, signal.SIGTERM)
        if force or time.monotonic() - c.stopping_since > MAX_GRACE:
            self.signal(c.process.pid, signal.SIGKILL)
            try:
                c.process.wait(5)
            except subprocess.TimeoutExpired:
                return False
            c.exit_code, c.process = c.process.returncode, None
            c.finished_at, c.reason = now(), "Error"
            return True
        return False

    @staticmethod
    def signal(pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)  # the session (and group) start_new_session made for this pid
        except ProcessLookupError:
            pass

    def terminate(self, runner: PodRunner) -> None:
        if not runner.deleting_since:
            runner.deleting_since = time.monotonic()
            log.info("pod %s is being deleted", runner.key)
        if all(self.kill(c) for c in runner.containers):
            self.remove(runner.pod)
            self.runners.pop(runner.uid, None)

    def remove(self, pod: Json) -> None:
        meta = pod["metadata"]
        try:
            self.api.call(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
            log.info("removed %s/%s", meta["namespace"], meta["name"])
        except ApiError as err:
            if err.status != 404:
                log.warning("deleting %s/%s: %s", meta["namespace"], meta["name"], err)

    def shutdown(self) -> None:
        for runner in self.runners.values():
            for c in runner.containers:
                if c.process is not None:
                    self.signal(c.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for runner in self.runners.values():
            for c in runner.containers:
                if c.process is not None:
                    try:
                        c.process.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        self.signal(c.process.pid, signal.SIGKILL)
                        c.process.wait(5)
        log.info("agent stopped")

    # --- what a container gets: command, environment, files ---

    def prepare(self, runner: PodRunner, spec: Json) -> tuple[list[str], dict[str, str]]:
        pod = runner.pod
        ns = pod["metadata"]["namespace"]
        mounts = self.mounts(runner, spec)
        env: dict[str, str] = {}
        for source in spec.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                ref = source["configMapRef"]
                data = self.object(ns, "configmaps", ref["name"], ref.get("optional", False))
                env.update({prefix + k: v for k, v in (data or {}).get("data", {}).items()})
            if "secretRef" in source:
                ref = source["secretRef"]
                data = self.object(ns, "secrets", ref["name"], ref.get("optional", False))
                env.update(
                    {
                        prefix + k: base64.b64decode(v).decode()
                        for k, v in (data or {}).get("data", {}).items()
                    }
                )
        for var in spec.get("env", []):
            value = self.env_value(runner, var, env)
            if value is not None:
                env[var["name"]] = value
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(runner.root),
            "LANG": "C.UTF-8",
            "HOSTNAME": pod["metadata"]["name"],
            **{k: self.rewrite(v, runner, mounts) for k, v in env.items()},
        }
        if "/tmp" in mounts:
            env.setdefault("TMPDIR", mounts["/tmp"])
        if self.token_mounted(pod):
            env["KUBECONFIG"] = str(self.kubeconfig(runner))
        argv = [*spec.get("command", []), *spec.get("args", [])]
        if not argv:
            raise Waiting("NoCommand", "the agent needs an explicit command (no image metadata)")
        argv = [self.rewrite(expand(a, env), runner, mounts) for a in argv]
        argv[0] = self.commands.get(argv[0], argv[0])
        return argv, env

    def env_value(self, runner: PodRunner, var: Json, env: dict[str, str]) -> str | None:
        if "value" in var:
            return expand(var["value"], env)
        source = var.get("valueFrom")
        if not source:
            return ""
        pod, ns = runner.pod, runner.pod["metadata"]["namespace"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            fields = {
                "metadata.name": pod["metadata"]["name"],
                "metadata.namespace": ns,
                "metadata.uid": pod["metadata"]["uid"],
                "spec.nodeName": self.node,
                "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
                "status.podIP": runner.ip,
                "status.hostIP": NODE_IP,
            }
            match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
            if match:
                return str(pod["metadata"].get(match.group(1), {}).get(match.group(2), ""))
            return str(fields[path])
        if "resourceFieldRef" in source:
            return "0"
        for kind, plural in (("secretKeyRef", "secrets"), ("configMapKeyRef", "configmaps")):
            if kind in source:
                ref = source[kind]
                optional = ref.get("optional", False)
                obj = self.object(ns, plural, ref["name"], optional)
                data = (obj or {}).get("data", {})
                if ref["key"] not in data:
                    if optional:
                        return None
                    raise Waiting(
                        "CreateContainerConfigError", f"{plural} {ref['name']} has no {ref['key']}"
                    )
                value = data[ref["key"]]
                return base64.b64decode(value).decode() if plural == "secrets" else str(value)
        return ""

    def object(self, ns: str, plural: str, name: str, optional: bool) -> Json | None:
        try:
            result: Json = self.api.call("GET", f"/api/v1/namespaces/{ns}/{plural}/{name}")
            return result
        except ApiError as err:
            if err.status == 404 and optional:
                return None
            raise Waiting("CreateContainerConfigError", f"{plural} {name}: {err}") from None

    def mounts(self, runner: PodRunner, spec: Json) -> dict[str, str]:
        """mountPath → local directory, for the container's volume mounts and image paths."""
        ns = runner.pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in runner.pod["spec"].get("volumes", [])}
        result = dict(self.image_paths)
        for mount in spec.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                local = self.state / "volumes" / ns / claim
            else:
                local = runner.root / "volumes" / mount["name"]
            local.mkdir(parents=True, exist_ok=True)
            if mount.get("subPath"):
                local = local / mount["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            if "secret" in volume or "configMap" in volume:
                self.fill(ns, volume, local)
            result[mount["mountPath"].rstrip("/") or "/"] = str(local)
        return result

    def fill(self, ns: str, volume: Json, local: Path) -> None:
        if "secret" in volume:
            ref = volume["secret"]
            obj = self.object(ns, "secrets", ref["secretName"], ref.get("optional", False))
            for key, value in (obj or {}).get("data", {}).items():
                (local / key).write_bytes(base64.b64decode(value))
        else:
            ref = volume["configMap"]
            obj = self.object(ns, "configmaps", ref["name"], ref.get("optional", False))
            for key, value in (obj or {}).get("data", {}).items():
                (local / key).write_text(value)

    def token_mounted(self, pod: Json) -> bool:
        spec = pod["spec"]
        if "automountServiceAccountToken" in spec:
            return bool(spec["automountServiceAccountToken"])
        sa = self.object(
            pod["metadata"]["namespace"],
            "serviceaccounts",
            spec.get("serviceAccountName", "default"),
            True,
        )
        return bool((sa or {}).get("automountServiceAccountToken", True))

    def kubeconfig(self, runner: PodRunner) -> Path:
        """A kubeconfig with a token bound to this pod: what its projected volume would hold."""
        path = runner.root / "kubeconfig"
        if path.exists():
            return path
        meta, spec = runner.pod["metadata"], runner.pod["spec"]
        sa = spec.get("serviceAccountName", "default")
        reply = self.api.call(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": 3600,
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            },
        )
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "cluster",
                    "cluster": {"server": self.server, "certificate-authority-data": self.ca_data},
                }
            ],
            "users": [{"name": sa, "user": {"token": reply["status"]["token"]}}],
            "contexts": [
                {
                    "name": "pod",
                    "context": {"cluster": "cluster", "user": sa, "namespace": meta["namespace"]},
                }
            ],
            "current-context": "pod",
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def rewrite(self, value: str, runner: PodRunner, mounts: dict[str, str]) -> str:
        """Give a value the meaning it would have inside the pod (see the module doc)."""
        value = re.sub(r"(?<![\w.])(0\.0\.0\.0|\[::\])(?=:|$|/)", runner.ip, value)
        value = self.resolve_services(value, runner)
        if not mounts:
            return value
        # One pass, longest path first: a value already rewritten to a local directory (which
        # may itself lie under /tmp, when the checkout does) must not be rewritten again.
        # Matches a path alone, a path below it, or `--flag=path`.
        paths = "|".join(re.escape(p) for p in sorted(mounts, key=len, reverse=True))
        return re.sub(rf"(^|=)({paths})(?=/|$)", lambda m: m.group(1) + mounts[m.group(2)], value)

    def resolve_services(self, value: str, runner: PodRunner) -> str:
        ns = runner.pod["metadata"]["namespace"]
        services = self.services.get(ns)
        if services is None:
            services = self.api.call("GET", f"/api/v1/namespaces/{ns}/services")["items"]
            self.services[ns] = services
        for svc in services:
            name = svc["metadata"]["name"]
            svc_ns = svc["metadata"]["namespace"]
            pattern = (
                rf"(?<![\w.-]){re.escape(name)}"
                rf"(?:\.{re.escape(svc_ns)}(?:\.svc(?:\.cluster\.local)?)?)?:(\d+)(?![\d])"
            )

            def endpoint(match: re.Match[str], svc: Json = svc) -> str:
                return self.endpoint(svc, int(match.group(1)))

            value = re.sub(pattern, endpoint, value)
        return value

    def endpoint(self, svc: Json, port: int) -> str:
        """`ip:port` of a pod behind `svc`, ready ones first (no pod yet: wait)."""
        spec = svc["spec"]
        target: Any = port
        for p in spec.get("ports", []):
            if p["port"] == port:
                target = p.get("targetPort", port)
        selector = spec.get("selector") or {}
        candidates = []
        for runner in self.runners.values():
            labels = runner.pod["metadata"].get("labels", {})
            if runner.pod["metadata"]["namespace"] != svc["metadata"]["namespace"]:
                continue
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if runner.pod["metadata"].get("deletionTimestamp") or runner.terminal:
                continue
            ready = all(c.ready for c in runner.containers)
            candidates.append((not ready, runner.pod["metadata"]["name"], runner))
        if not candidates:
            raise Waiting("ContainerCreating", f"no pod behind service {svc['metadata']['name']}")
        runner = sorted(candidates, key=lambda t: (t[0], t[1]))[0][2]
        return f"{runner.ip}:{container_port(runner.pod, target)}"

    # --- probes ---

    def probe(self, runner: PodRunner, c: Container) -> None:
        clock = time.monotonic()
        started = c.started_mono
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = c.spec.get(kind)
            if kind != "startupProbe" and not c.started:
                continue
            if kind == "startupProbe" and c.started:
                continue
            if spec is None:
                if kind == "readinessProbe":
                    c.ready = True
                continue
            due = c.probe_due.get(kind)
            if due is None:
                due = started + float(spec.get("initialDelaySeconds", 0))
                c.probe_due[kind] = due
            if clock < due:
                continue
            # Probe more often than asked (at most every second) to keep tests quick, but
            # count failures against failureThreshold as the kubelet does.
            c.probe_due[kind] = clock + min(1.0, float(spec.get("periodSeconds", 10)))
            ok = self.check(runner, c, spec)
            failures = 0 if ok else c.probe_failures.get(kind, 0) + 1
            c.probe_failures[kind] = failures
            threshold = int(spec.get("failureThreshold", 3))
            if kind == "startupProbe":
                c.started = ok
                if failures >= threshold * max(1, int(spec.get("periodSeconds", 10))):
                    self.restart_unhealthy(runner, c, kind)
            elif kind == "readinessProbe":
                if ok:
                    c.ready = True
                elif failures >= threshold:
                    c.ready = False
            elif failures >= threshold * max(1, int(spec.get("periodSeconds", 10))):
                self.restart_unhealthy(runner, c, kind)

    def restart_unhealthy(self, runner: PodRunner, c: Container, kind: str) -> None:
        log.warning("%s/%s failed its %s: restarting", runner.key, c.spec["name"], kind)
        self.kill(c, force=True)
        c.restarts += 1
        c.stopping_since = 0.0
        c.exit_code = None
        c.next_start = time.monotonic() + 1.0

    def check(self, runner: PodRunner, c: Container, spec: Json) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                port = container_port(runner.pod, get["port"])
                scheme = get.get("scheme", "HTTP").lower()
                url = f"{scheme}://{runner.ip}:{port}{get.get('path', '/')}"
                with urllib.request.urlopen(url, timeout=timeout) as reply:
                    return bool(200 <= reply.status < 400)
            if "grpc" in spec:
                import grpc
                from grpc_health.v1 import health_pb2, health_pb2_grpc

                port = container_port(runner.pod, spec["grpc"]["port"])
                with grpc.insecure_channel(f"{runner.ip}:{port}") as channel:
                    reply = health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(service=spec["grpc"].get("service", "")),
                        timeout=timeout,
                    )
                    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
            if "tcpSocket" in spec:
                port = container_port(runner.pod, spec["tcpSocket"]["port"])
                with socket.create_connection((runner.ip, port), timeout=timeout):
                    return True
        except Exception:  # whatever went wrong, the probe failed
            return False
        return True  # exec probes: not run here

    # --- status ---

    def report(self, runner: PodRunner) -> None:
        statuses = []
        for c in runner.containers:
            state: Json
            if c.process is not None:
                state = {"running": {"startedAt": c.started_at}}
            elif c.exit_code is not None:
                state = {
                    "terminated": {
                        "exitCode": c.exit_code,
                        "reason": c.reason,
                        "startedAt": c.started_at or runner.start_time,
                        "finishedAt": c.finished_at,
                    }
                }
            else:
                state = {"waiting": {"reason": c.waiting or "ContainerCreating"}}
            statuses.append(
                {
                    "name": c.spec["name"],
                    "image": c.spec.get("image", ""),
                    "imageID": "",
                    "containerID": f"local://{c.process.pid}" if c.process else "",
                    "ready": c.ready and c.process is not None,
                    "started": c.process is not None and c.started,
                    "restartCount": c.restarts,
                    "state": state,
                }
            )
        ready = not runner.terminal and all(s["ready"] for s in statuses)
        if runner.terminal:
            phase = runner.terminal
        elif any(c.process is not None for c in runner.containers) or any(
            c.restarts for c in runner.containers
        ):
            phase = "Running"
        else:
            phase = "Pending"
        summary = json.dumps([phase, ready, statuses], sort_keys=True)
        if summary == runner.last_status:
            return
        previous = {c["type"]: c for c in runner.pod.get("status", {}).get("conditions", []) or []}

        def condition(kind: str, value: bool) -> Json:
            status = "True" if value else "False"
            old = previous.get(kind)
            since = old["lastTransitionTime"] if old and old["status"] == status else now()
            return {"type": kind, "status": status, "lastTransitionTime": since}

        body = {
            "status": {
                "phase": phase,
                "hostIP": NODE_IP,
                "hostIPs": [{"ip": NODE_IP}],
                "podIP": runner.ip,
                "podIPs": [{"ip": runner.ip}],
                "startTime": runner.start_time,
                "conditions": [
                    condition("PodScheduled", True),
                    condition("Initialized", True),
                    condition("ContainersReady", ready),
                    condition("Ready", ready),
                ],
                "containerStatuses": statuses,
            }
        }
        meta = runner.pod["metadata"]
        try:
            self.api.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", body
            )
            runner.last_status = summary
        except ApiError as err:
            log.warning("status of %s: %s", runner.key, err)


class Waiting(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion ($$ escapes; unknown names stay as they are)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, value)


def container_port(pod: Json, port: Any) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
    raise Waiting("ContainerCreating", f"no container port named {port}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--node-name", default="agent-0")
    parser.add_argument("--kubelet-version", default="v0.0.0")
    parser.add_argument("--command", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--image-path", action="append", default=[], help="PATH=LOCAL")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    agent = Agent(args)

    def stop(*_: object) -> None:
        agent.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()


if __name__ == "__main__":
    main()
