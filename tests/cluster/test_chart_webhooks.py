"""The chart's webhook values, as rendered by the real helm (issue 19)."""

from __future__ import annotations

import base64

from cluster.helpers import CHART, Helm
from cluster.test_chart import Doc, by_kind, render
from tapedeck.webhooks.secret import valid_webhook_secret

URLS = "https://a.example/hooks,https://b.example/hooks"


def envs(docs: list[Doc]) -> dict[str, dict[str, Doc]]:
    found = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            container = d["spec"]["template"]["spec"]["containers"][0]
            found[d["metadata"]["name"]] = {e["name"]: e for e in container.get("env", [])}
    return found


def test_webhooks_reach_storage_api_and_the_operator(helm: Helm) -> None:
    docs = render(
        helm,
        "--set=webhooks.urls={https://a.example/hooks,https://b.example/hooks}",
        "--set=webhooks.publicURL=https://tapedeck.example",
    )
    by_name = envs(docs)
    for name in ("tapedeck-storage", "tapedeck-api", "tapedeck-operator"):
        assert by_name[name]["TAPEDECK_WEBHOOK_URL"]["value"] == URLS, name
    operator = by_name["tapedeck-operator"]
    assert operator["TAPEDECK_WEBHOOK_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "tapedeck-secret",
        "key": "webhook-secret",
    }
    assert operator["TAPEDECK_PUBLIC_URL"]["value"] == "https://tapedeck.example"
    assert "TAPEDECK_WEBHOOK_SECRET" not in by_name["tapedeck-api"]  # one deliverer
    secret = by_kind(docs, "Secret")["tapedeck-secret"]
    assert valid_webhook_secret(base64.b64decode(secret["data"]["webhook-secret"]).decode())
    policy = by_kind(docs, "NetworkPolicy")["tapedeck-to-webhooks"]
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]


def test_no_webhooks_by_default(helm: Helm) -> None:
    docs = render(helm)
    assert all("TAPEDECK_WEBHOOK_URL" not in env for env in envs(docs).values())
    assert "webhook-secret" not in by_kind(docs, "Secret")["tapedeck-secret"]["data"]
    assert "tapedeck-to-webhooks" not in by_kind(docs, "NetworkPolicy")


def test_a_configured_secret_is_kept_and_bad_values_are_refused(helm: Helm) -> None:
    mine = "whsec_" + base64.b64encode(b"k" * 32).decode()
    docs = render(helm, "--set=webhooks.urls={https://a.example/}", f"--set=webhooks.secret={mine}")
    secret = by_kind(docs, "Secret")["tapedeck-secret"]
    assert base64.b64decode(secret["data"]["webhook-secret"]).decode() == mine
    for setting in ("webhooks.urls={ftp://a.example/}", "webhooks.secret=hunter2"):
        out = helm("template", "t", str(CHART), f"--set={setting}", check=False)
        assert "values don't meet the specifications of the schema" in out, out[-800:]
