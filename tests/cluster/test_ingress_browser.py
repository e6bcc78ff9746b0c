"""The README's front door, for real: Chromium records through an ingress controller with TLS.

The chart (installed on the real node by `installed_chart`) gets the Ingress of
charts/tapedeck/ci/ingress-traefik-values.yaml by `helm upgrade`; Traefik (a real controller, as
a host process, see cluster/ingress.py) serves it on a loopback port with a certificate from the
test's own CA, which Chromium trusts through its NSS database. The page is a secure origin, so
the fake camera and microphone capture; the recording's WebSockets stay open through the
controller for three times its read timeout without a reconnect; the session compiles on the
node (operator Job on the compile image) and the MP4, downloaded through the ingress, plays
(ffprobe)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from browser.conftest import CHROMIUM, CHROMIUM_ARGS
from browser.test_recording import open_app, wait_uploaded
from playwright.sync_api import Page, expect, sync_playwright

from cluster.conftest import need, required
from cluster.controlplane import free_port
from cluster.helpers import CHART, wait_until
from cluster.ingress import (
    READ_TIMEOUT_SECONDS,
    TRAEFIK_CONTROLLER,
    IngressTls,
    https_status,
    make_tls,
    traefik_binary,
    traefik_process,
    trusting_home,
)
from cluster.node import InstalledChart, RealNode

HOST = "tapedeck.ci.example"  # charts/tapedeck/ci/ingress-traefik-values.yaml's ingress.host
TLS_SECRET = "tapedeck-tls"
RECORD_SECONDS = 3.0 * READ_TIMEOUT_SECONDS  # well past the entry point's readTimeout


@dataclass(frozen=True)
class Front:
    url: str
    tls: IngressTls
    home: Path
    api_token: str
    diagnose: Callable[[], str]  # Traefik's log and the release's pod logs, for failures


def need_tools() -> None:
    missing = [t for t in ("certutil", "ffprobe") if shutil.which(t) is None]
    if not Path(CHROMIUM).exists():
        missing.append(f"Chromium at {CHROMIUM}")
    if missing:
        message = f"missing {', '.join(missing)} (apt-get install libnss3-tools ffmpeg chromium)"
        if required():
            pytest.fail(message)
        pytest.skip(message)


def api_client(kubeconfig: Path) -> kubernetes.client.ApiClient:
    client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig)
    )
    return client


def create_or_replace(kubeconfig: Path, namespace: str, tls: IngressTls) -> None:
    """The TLS Secret the Ingress names, and the IngressClass Traefik serves."""
    with api_client(kubeconfig) as client:
        core, net = kubernetes.client.CoreV1Api(client), kubernetes.client.NetworkingV1Api(client)
        secret = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(name=TLS_SECRET),
            type="kubernetes.io/tls",
            data={
                "tls.crt": base64.b64encode(tls.cert_pem).decode(),
                "tls.key": base64.b64encode(tls.key_pem).decode(),
            },
        )
        try:
            core.create_namespaced_secret(namespace, secret)
        except kubernetes.client.ApiException as err:
            if err.status != 409:
                raise
            core.replace_namespaced_secret(TLS_SECRET, namespace, secret)
        ingress_class = kubernetes.client.V1IngressClass(
            metadata=kubernetes.client.V1ObjectMeta(name="traefik"),
            spec=kubernetes.client.V1IngressClassSpec(controller=TRAEFIK_CONTROLLER),
        )
        try:
            net.create_ingress_class(ingress_class)
        except kubernetes.client.ApiException as err:
            if err.status != 409:
                raise


def clean_up(kubeconfig: Path, namespace: str) -> None:
    with api_client(kubeconfig) as client:
        core, net = kubernetes.client.CoreV1Api(client), kubernetes.client.NetworkingV1Api(client)
        for delete, args in (
            (net.delete_ingress_class, ("traefik",)),
            (core.delete_namespaced_secret, (TLS_SECRET, namespace)),
        ):
            try:
                delete(*args)
            except kubernetes.client.ApiException as err:
                if err.status != 404:
                    raise


def leaving_pods(kubeconfig: Path, namespace: str) -> list[str]:
    with api_client(kubeconfig) as client:
        listed = kubernetes.client.CoreV1Api(client).list_namespaced_pod(namespace)
    return [
        str(p.metadata.name)
        for p in listed.items
        if p.metadata is not None and p.metadata.deletion_timestamp is not None
    ]


def read_api_token(kubeconfig: Path, namespace: str, release: str) -> str:
    """The token the install generated, read as the chart's NOTES tell a person to."""
    with api_client(kubeconfig) as client:
        secret = kubernetes.client.CoreV1Api(client).read_namespaced_secret(
            f"{release}-secret", namespace
        )
    assert secret.data, secret
    return base64.b64decode(secret.data["api-token"]).decode()


@pytest.fixture
def front(
    real_node: RealNode,
    installed_chart: InstalledChart,
    tmp_path: Path,
) -> Iterator[Front]:
    need_tools()
    binary = traefik_binary()
    need(binary)
    kubeconfig = real_node.kubeconfig
    namespace, release = installed_chart.namespace, installed_chart.release

    tls = make_tls(tmp_path / "tls", HOST)
    port = free_port()
    traefik = traefik_process(binary, tmp_path / "traefik", port)

    def diagnose() -> str:
        return f"=== traefik\n{traefik.tail(6000)}\n{real_node.logs(namespace)}"

    create_or_replace(kubeconfig, namespace, tls)
    try:
        real_node.helm(
            "upgrade",
            release,
            str(CHART),
            f"--namespace={namespace}",
            "--reuse-values",
            "-f",
            str(CHART / "ci" / "ingress-traefik-values.yaml"),
            "--wait",
            "--timeout=5m",
            timeout=330,
        )
        token = read_api_token(kubeconfig, namespace, release)
        traefik.start(env={"PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(kubeconfig)})
        # 200 once Traefik has read the Ingress, the Secret and the api's EndpointSlices.
        try:
            wait_until(
                lambda: traefik.alive() and https_status(port, HOST, "/readyz", tls.ca_file) == 200,
                120,
                "the api's /readyz through Traefik",
                interval=1,
            )
        except TimeoutError as err:
            err.add_note(diagnose())
            raise
        yield Front(
            url=f"https://{HOST}:{port}",
            tls=tls,
            home=trusting_home(tmp_path / "home", tls.ca_file),
            api_token=token,
            diagnose=diagnose,
        )
    finally:
        traefik.stop()
        # Back to the chart as installed, for the tests that share it: the pods the upgrade
        # replaced are gone too (a test that picks "a pod of ingest" must not get one leaving).
        real_node.helm("rollback", release, f"--namespace={namespace}", "--wait", timeout=330)
        clean_up(kubeconfig, namespace)
        wait_until(lambda: not leaving_pods(kubeconfig, namespace), 180, "the old pods to go")


def ffprobe(path: Path) -> tuple[list[str], float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = json.loads(out)
    codecs = sorted(s["codec_name"] for s in info["streams"])
    return codecs, float(info["format"]["duration"])


def sign_in(page: Page, token: str) -> None:
    """As a person does the first time: the page asks for the token the install generated."""
    field = page.get_by_role("textbox", name="Access token")
    expect(field).to_be_visible(timeout=30_000)
    field.fill(token)
    page.get_by_role("button", name="Save token").click()
    expect(field).to_have_count(0)


@pytest.mark.timeout(1200)
def test_chromium_records_through_traefik_with_tls(front: Front, tmp_path: Path) -> None:
    try:
        target, recorded = record_through(front, tmp_path)
    except Exception as err:
        err.add_note(front.diagnose())
        raise
    codecs, duration = ffprobe(target)
    print(f"through the ingress: recorded {recorded:.1f} s; the MP4: {codecs}, {duration:.2f} s")
    assert codecs == ["aac", "h264"], codecs
    # The recording's own length, within what clicking Stop adds.
    assert RECORD_SECONDS - 1.0 <= duration <= recorded + 1.0, (duration, recorded)


def record_through(front: Front, tmp_path: Path) -> tuple[Path, float]:
    """Open, sign in, record RECORD_SECONDS, compile and download, all through the ingress;
    returns the MP4 and how long the recording ran."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # The test CA is trusted through HOME's NSS database; no certificate check is off.
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {HOST} 127.0.0.1"],
            env={**os.environ, "HOME": str(front.home)},
        )
        try:
            context = browser.new_context(base_url=front.url, accept_downloads=True)
            context.grant_permissions(["camera", "microphone"], origin=front.url)
            page = context.new_page()
            responses: list[Any] = []
            page.on("response", lambda r: responses.append(r) if r.url == front.url + "/" else None)
            open_app(page)
            assert page.evaluate("window.isSecureContext") is True
            details = responses[0].security_details()
            assert details and details.get("subjectName") == HOST, details
            assert details.get("issuer") == "Tapedeck test CA", details
            sign_in(page, front.api_token)

            page.get_by_role("button", name="Start recording").click()
            session = page.get_by_test_id("session-id")
            expect(session).to_have_text(re.compile(r"^[a-z0-9-]{8,}$"), timeout=30_000)
            session_id = session.inner_text()
            started = time.monotonic()
            page.wait_for_timeout(RECORD_SECONDS * 1000)
            page.get_by_role("button", name="Stop recording").click()
            recorded = time.monotonic() - started
            wait_uploaded(page, "video", "audio")
            for track in ("video", "audio"):
                status = page.get_by_test_id(f"track-status-{track}")
                # One WebSocket per track for the whole recording: the controller cut none.
                assert status.get_attribute("data-reconnects") == "0", track
                assert status.get_attribute("data-backlog") == "0", track

            row = page.locator(f'[data-session-id="{session_id}"]')
            expect(row).to_be_visible(timeout=30_000)
            row.get_by_role("button", name="Compile").click()
            download_link = row.get_by_role("link", name="Download")
            expect(download_link).to_be_visible(timeout=600_000)
            with page.expect_download(timeout=120_000) as info:
                download_link.click()
            target = tmp_path / "through-ingress.mp4"
            info.value.save_as(target)
            assert info.value.url.startswith(front.url), info.value.url
        finally:
            browser.close()
    return target, recorded


def test_the_test_ca_signs_a_certificate_clients_verify(tmp_path: Path) -> None:
    """The TLS the browser test relies on, without a node: a TLS server on loopback with the
    test's certificate passes a verifying client's checks for HOST (and for no other name),
    and the NSS database trusts the CA for servers."""
    need_tools()
    tls = make_tls(tmp_path / "tls", HOST)
    (tmp_path / "tls.crt").write_bytes(tls.cert_pem)
    (tmp_path / "tls.key").write_bytes(tls.key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    try:
                        with server_context.wrap_socket(conn, server_side=True) as tls_conn:
                            tls_conn.recv(1024)
                            tls_conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                    except (ssl.SSLError, OSError):
                        pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        assert https_status(port, HOST, "/", tls.ca_file) == 204
        with pytest.raises(ssl.SSLCertVerificationError):
            https_status(port, "other.test", "/", tls.ca_file)
        thread.join(10)

    home = trusting_home(tmp_path / "home", tls.ca_file)
    listing = subprocess.run(
        ["certutil", "-L", "-d", f"sql:{home / '.pki' / 'nssdb'}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"tapedeck-test-ca\s+C,,", listing), listing
