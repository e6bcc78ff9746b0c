"""A real ingress controller for the cluster suite: Traefik, with TLS from a CA the test makes.

Traefik (built by tests/cluster/build-traefik.sh, cached outside the repository) runs as a
process on the host, not as a pod: it reads Ingresses, Services, EndpointSlices and the TLS
Secret through the node's API server like any controller, and proxies to the pod addresses on
the node's pod bridge, but needs no image of its own. It listens on a loopback port only.
Chromium trusts the test's CA through an NSS database in a HOME of its own (certutil, from
Debian's libnss3-tools), so the origin is secure for getUserMedia without switching certificate
checks off.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cluster.controlplane import Process
from cluster.helpers import built_at

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-traefik.sh"
# Traefik's ingress provider serves Ingresses of an IngressClass with this controller name.
TRAEFIK_CONTROLLER = "traefik.io/ingress-controller"


def traefik_binary() -> Path:
    """Where build-traefik.sh caches the version it pins (its `--where`)."""
    return built_at(BUILD_SCRIPT.name)


@dataclass(frozen=True)
class IngressTls:
    """A CA of the test's own and a server certificate it signed for `host`."""

    host: str
    ca_file: Path
    cert_pem: bytes
    key_pem: bytes


def make_tls(directory: Path, host: str) -> IngressTls:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tapedeck test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return IngressTls(
        host=host,
        ca_file=ca_file,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def trusting_home(home: Path, ca_file: Path) -> Path:
    """A HOME whose NSS database (~/.pki/nssdb, where Chromium on Linux looks) trusts the CA
    for TLS servers: a browser started with it accepts the ingress's certificate as valid."""
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True, capture_output=True
    )
    trust = ["-n", "tapedeck-test-ca", "-t", "C,,", "-i", str(ca_file)]
    subprocess.run(
        ["certutil", "-A", "-d", f"sql:{db}", *trust],
        check=True,
        capture_output=True,
    )
    return home


def https_status(port: int, host: str, path: str, ca_file: Path) -> int:
    """GET https://host:port/path on 127.0.0.1 with SNI `host`, verified against the test CA:
    the status Traefik's route answers with (404 until it has picked the Ingress up)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            head = tls.recv(64).decode("latin-1")
    match = re.match(r"HTTP/1\.[01] (\d{3})", head)
    if not match:
        raise AssertionError(f"not an HTTP answer: {head!r}")
    return int(match.group(1))


# The entry point's respondingTimeouts.readTimeout (Traefik's default: 60 s). Go's server clears
# the connection's deadline when Traefik takes it over for a WebSocket, so it bounds requests,
# not recordings; the browser test records several times this long to prove it. Set shorter
# than the default only so that proof takes seconds instead of minutes of the suite.
READ_TIMEOUT_SECONDS = 10


def traefik_process(binary: Path, workdir: Path, port: int) -> Process:
    """Traefik with one TLS entry point on 127.0.0.1:`port` and the Kubernetes Ingress provider,
    otherwise its defaults except the entry point's readTimeout (READ_TIMEOUT_SECONDS). No TLS
    on the entry point itself: the Ingress's router.tls annotation (the chart sets it with
    ingress.tls) is what makes its routes answer over TLS. No version check, no usage report:
    nothing leaves the machine."""
    workdir.mkdir(parents=True, exist_ok=True)
    return Process(
        "traefik",
        [
            str(binary),
            "--global.checkNewVersion=false",
            "--global.sendAnonymousUsage=false",
            f"--entryPoints.websecure.address=127.0.0.1:{port}",
            f"--entryPoints.websecure.transport.respondingTimeouts.readTimeout={READ_TIMEOUT_SECONDS}s",
            "--providers.kubernetesingress=true",
            "--providers.kubernetesingress.ingressClass=traefik",
            "--log.level=INFO",
            "--accesslog=true",
        ],
        workdir / "traefik.log",
    )
