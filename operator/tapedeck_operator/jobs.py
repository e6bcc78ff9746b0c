"""The compile Job for one compile request: pure, so its every field is unit-tested.

The pod runs `tapedeck compile ID` with the resource's output options, against the storage
service over gRPC (no shared volume): the same command the embedded worker runs locally.
Its exit codes (`tapedeck.compiler.exits`) drive the pod failure policy: 1 is a compile that
failed on its input (the session is already `failed`, with FFmpeg's message), so the Job
fails at once; 75 (storage unreachable) is retried up to `backoffLimit`; a pod evicted or
preempted is retried without counting.

A follower Job (`build_follower_job`) compiles while a session records (docs/decisions.md
"Cluster mode: compiling while recording"): `tapedeck follow ID` with the same output options,
which ends in the same compile once the session is queued. It is never retried: a follower
that failed is replaced by the one-shot compile Job.

`python -m tapedeck_operator.jobs examples/recordingsession.yaml` prints the Job the operator
makes for that resource (docs/kubernetes.md shows it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from tapedeck.cluster.resources import API_VERSION, KIND
from tapedeck.compiler.exits import EXIT_FAILED
from tapedeck.compiler.plan import OutputOptions
from tapedeck.settings import Settings

NAME_PREFIX = "tapedeck-compile-"
FOLLOW_PREFIX = "tapedeck-"
FOLLOW_SUFFIX = "-follow"
MAX_NAME = 63  # a Job's name is also a label value on its pods
CONTAINER = "compile"
FOLLOW_CONTAINER = "follow"
UID = 10001

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
MANAGED_BY = "tapedeck-operator"
LABEL_REQUEST = "tapedeck.io/compile-request"
ANNOTATION_SESSION_ID = "tapedeck.io/session-id"
LABEL_FOLLOWER = "tapedeck.io/follower"
LABELS = {
    "app.kubernetes.io/name": "tapedeck",
    "app.kubernetes.io/component": "compile",
    LABEL_MANAGED_BY: MANAGED_BY,
}
# A follower's pod is a compile pod to the chart (its NetworkPolicies select compile pods by
# these labels: storage only, no ingress); the extra label tells the operator which it is.
FOLLOW_LABELS = {**LABELS, LABEL_FOLLOWER: "true"}
FOLLOW_SELECTOR = f"{LABEL_FOLLOWER}=true,{LABEL_MANAGED_BY}={MANAGED_BY}"


def instance_label(settings: Settings) -> dict[str, str]:
    """The release's label, which the chart's NetworkPolicies select compile pods by: without
    it, two releases in one namespace would let each other's compile pods in."""
    return {LABEL_INSTANCE: settings.instance} if settings.instance else {}


def job_name(session_id: str, request: int) -> str:
    """Deterministic, so a repeated or restarted request finds its Job instead of making one.

    `tapedeck-compile-{session id}-{request}`; a session id too long for that is cut and
    followed by a hash of the whole id, so two long ids never share a name.
    """
    return _bounded(NAME_PREFIX, session_id, f"-{request}")


def follower_name(session_id: str) -> str:
    """`tapedeck-{session id}-follow`, cut and hashed like `job_name`: one per session, so a
    second follower for the same recording is refused by the API server."""
    return _bounded(FOLLOW_PREFIX, session_id, FOLLOW_SUFFIX)


def _bounded(prefix: str, session_id: str, suffix: str) -> str:
    name = f"{prefix}{session_id}{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:8]
    room = MAX_NAME - len(prefix) - len(suffix) - len(digest) - 1
    return f"{prefix}{session_id[:room].rstrip('-')}-{digest}{suffix}"


def is_follower(job: Mapping[str, Any]) -> bool:
    labels = (job.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(LABEL_FOLLOWER) == "true")


def compile_args(session_id: str, output: OutputOptions) -> list[str]:
    return ["compile", session_id, *output_args(output)]


def follow_args(session_id: str, output: OutputOptions) -> list[str]:
    return ["follow", session_id, *output_args(output)]


def follower_fits(job: Mapping[str, Any], session_id: str, output: OutputOptions) -> bool:
    """The follower compiles with the output options the compile request asks for (the
    spec's `output` may have changed since it started)."""
    containers = ((job.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers"
    ) or [{}]
    return bool(containers[0].get("args") == follow_args(session_id, output))


def output_args(output: OutputOptions) -> list[str]:
    args = [
        "--video-codec",
        output.video_codec,
        "--crf",
        str(output.crf),
        "--preset",
        output.preset,
    ]
    if output.max_height is not None:
        args += ["--max-height", str(output.max_height)]
    if output.hls is not None:
        args += ["--hls" if output.hls else "--no-hls"]
    return args


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    meta = owner["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def replica_env(settings: Settings) -> list[dict[str, str]]:
    """Several storage replicas: the job gets every address and finds the session's owner."""
    if not settings.storage_addrs:
        return []
    return [{"name": "TAPEDECK_STORAGE_ADDRS", "value": ",".join(settings.storage_addrs)}]


def build_job(
    owner: Mapping[str, Any],
    session_id: str,
    request: int,
    output: OutputOptions,
    settings: Settings,
) -> dict[str, Any]:
    """The Job for compile request `request` of the RecordingSession `owner`."""
    labels = {**LABELS, **instance_label(settings), LABEL_REQUEST: str(request)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, job_name(session_id, request), labels, session_id),
        "spec": {
            "backoffLimit": max(0, settings.compile_max_attempts - 1),
            "activeDeadlineSeconds": int(settings.compile_timeout.total_seconds()),
            "ttlSecondsAfterFinished": int(settings.compile_job_ttl.total_seconds()),
            "podFailurePolicy": {
                "rules": [
                    {
                        # The compile failed on its input and recorded why: retrying would
                        # fail the same way.
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_FAILED],
                        },
                    },
                    {
                        # Evicted, preempted or drained: not the compile's fault.
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": _pod_template(
                labels,
                CONTAINER,
                compile_args(session_id, output),
                settings.compile_resources,
                settings,
            ),
        },
    }


def build_follower_job(
    owner: Mapping[str, Any], session_id: str, output: OutputOptions, settings: Settings
) -> dict[str, Any]:
    """The follower of the RecordingSession `owner`'s recording: compiles while it records.

    No retries (`backoffLimit` 0, evictions included): a follower restarted would start from
    the first byte again, and the one-shot compile Job does that better once asked."""
    labels = {**FOLLOW_LABELS, **instance_label(settings)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(owner, follower_name(session_id), labels, session_id),
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(settings.follower_timeout.total_seconds()),
            "ttlSecondsAfterFinished": int(settings.compile_job_ttl.total_seconds()),
            "template": _pod_template(
                labels,
                FOLLOW_CONTAINER,
                follow_args(session_id, output),
                settings.follower_resources,
                settings,
            ),
        },
    }


def _metadata(
    owner: Mapping[str, Any], name: str, labels: Mapping[str, str], session_id: str
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": dict(labels),
        "annotations": {ANNOTATION_SESSION_ID: session_id},
        "ownerReferences": [owner_reference(owner)],
    }


def _pod_template(
    labels: Mapping[str, str],
    container: str,
    args: list[str],
    resources: Mapping[str, Mapping[str, str]],
    settings: Settings,
) -> dict[str, Any]:
    """A compile image pod (a compile or a follower): restricted, storage over gRPC only."""
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": UID,
                "runAsGroup": UID,
                "fsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": container,
                    "image": settings.compile_image,
                    "imagePullPolicy": settings.compile_image_pull_policy,
                    "command": ["tapedeck"],
                    "args": args,
                    "env": [
                        {"name": "TAPEDECK_STORAGE_ADDR", "value": settings.storage_addr},
                        *replica_env(settings),
                        {"name": "TMPDIR", "value": "/tmp"},
                        {"name": "HOME", "value": "/tmp"},
                        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                    ],
                    "resources": {k: dict(v) for k, v in resources.items()},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": settings.compile_scratch_size}}],
        },
    }


def example_job(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The Job the operator makes for a resource's first compile, with default settings and
    the storage address and release the Helm chart (release `tapedeck`) gives the operator
    (for docs/kubernetes.md)."""
    from tapedeck.cluster.resources import parse_spec, session_id_of

    settings = Settings.model_construct(storage_addr="tapedeck-storage:50051", instance="tapedeck")
    owner = {
        **resource,
        "metadata": {
            "namespace": "tapedeck",
            "uid": "5e1f2d9a-8c41-4a55-9a3e-1b7c2f60d2aa",
            **resource["metadata"],
        },
    }
    spec = parse_spec(resource.get("spec") or {})
    return build_job(owner, session_id_of(resource), spec.compile_request, spec.output, settings)


def main(argv: list[str] | None = None) -> None:
    """`python -m tapedeck_operator.jobs RESOURCE.yaml`: print the Job for that resource."""
    import argparse

    import yaml

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("resource", type=argparse.FileType())
    args = parser.parse_args(argv)
    print(yaml.safe_dump(example_job(yaml.safe_load(args.resource)), sort_keys=False), end="")


if __name__ == "__main__":
    main()
