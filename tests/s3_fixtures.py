"""A real S3 server for the tests: SeaweedFS's `weed mini` on loopback (tests/s3/build-weed.sh).

`weed mini` runs master, volume server, filer and S3 gateway in one process. Every port it opens
is given explicitly (free ports, so several test processes can run at once) and everything else
it could open (WebDAV, admin UI, Iceberg/Lance catalogs, telemetry) is off. Its volume size and
count are explicit too: left to itself it sizes both from the disk's free space, and on a nearly
full shared disk it then has no room for a volume and answers InternalError to every upload
(below 1 % free, a floor `mini` does not let us change, it refuses writes anyway; `disk_mb`
gives it a file system of its own for that). Without the binary
the S3 tests are skipped, except in CI (CI=true) or with TAPEDECK_REQUIRE_S3=1, where that is
an error, like the cluster suite.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tapedeck.settings import S3Settings

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "tests" / "s3" / "build-weed.sh"
REGION = "us-east-1"


def required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("TAPEDECK_REQUIRE_S3") == "1"


def weed_binary() -> Path | None:
    """The cached `weed` (build-weed.sh --check prints its path), or None when not built."""
    found = subprocess.run([str(BUILD), "--check"], capture_output=True, text=True, check=False)
    path = Path(found.stdout.strip()) if found.returncode == 0 else None
    return path if path is not None and os.access(path, os.X_OK) else None


def need_weed() -> Path:
    binary = weed_binary()
    if binary is None:
        message = f"no SeaweedFS binary: run {BUILD.relative_to(REPO)}"
        if required():
            pytest.fail(message)
        pytest.skip(message)
    return binary


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports free right now, all distinct, none another's +10000 (weed's gRPC convention)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind((host, 0))
            port = s.getsockname()[1]
            sockets.append(s)
            if port + 10000 > 65535 or any(abs(port - p) == 10000 for p in ports):
                continue
            ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


@dataclass
class WeedServer:
    """One `weed mini` process; `stop` and `start` again keep its data and ports, so fault
    tests can take the store away and bring the same one back. `host` is the one address it
    binds (loopback; the cluster suite uses the real node's address, which pods reach).
    `disk_mb` mounts a tmpfs of that size as its data dir (root only; `release` unmounts it),
    so other processes filling the machine's disk cannot starve it."""

    binary: Path
    root: Path
    host: str = "127.0.0.1"
    volume_size_mb: int = 64
    max_volumes: int = 256
    disk_mb: int | None = None
    access_key: str = field(default_factory=lambda: "td" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def log(self) -> Path:
        return self.root / "weed.log"

    def env(self) -> dict[str, str]:
        """The AWS conventions the code under test reads."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
        }

    def client(self) -> object:
        """A plain (blocking) botocore client, for set-up and checks beside the code under test."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def start(self, timeout: float = 120.0) -> None:
        for attempt in range(3):
            if not self.ports or attempt:
                names = ["master", "master_grpc", "volume", "volume_grpc", "filer"]
                names += ["filer_grpc", "s3", "s3_grpc"]
                self.ports = dict(zip(names, free_ports(len(names), self.host), strict=True))
            if self._start_once(timeout):
                return
        raise RuntimeError(f"weed mini did not start; log:\n{self.log_tail()}")

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _prepare_data(self) -> None:
        """The data dir, on a disk of its own when asked; refused early (with the reason)
        when its disk has no room for one volume above SeaweedFS's 1 % free floor."""
        self.data.mkdir(parents=True, exist_ok=True)
        if self.disk_mb is not None and not os.path.ismount(self.data):
            size = f"size={self.disk_mb}m"
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(self.data)], check=True
            )
        disk = os.statvfs(self.data)
        free, total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
        needed = total // 100 + self.volume_size_mb * 1024 * 1024
        if free < needed:
            raise RuntimeError(
                f"weed mini: {self.data} has {free >> 20} MiB free; SeaweedFS refuses writes "
                f"below 1 % free plus one {self.volume_size_mb} MiB volume ({needed >> 20} MiB)"
            )

    def release(self) -> None:
        """Stops it and unmounts its own disk (its data goes with it)."""
        self.stop()
        if self.disk_mb is not None and os.path.ismount(self.data):
            subprocess.run(["umount", str(self.data)], check=False)

    def _start_once(self, timeout: float) -> bool:
        data = self.data
        self._prepare_data()
        p = self.ports
        args = [
            str(self.binary),
            "mini",
            f"-dir={data}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-admin.port.legacy=0",
            "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_mb}",
            "-master.volumePreallocate=false",
            f"-volume.max={self.max_volumes}",
        ]
        env = {**os.environ, **self.env()}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.root
            )
        deadline = time.monotonic() + timeout
        client = self.client()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # a port taken meanwhile: try again with others
            try:
                client.list_buckets()  # type: ignore[attr-defined]
                return True
            except (BotoCoreError, ClientError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"weed mini: S3 not answering after {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it by its PID (SIGKILL after 20 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()

    def create_bucket(self, name: str) -> None:
        """Created through S3 itself, retried while the filer settles after start; a bucket
        that is already there is fine (set-up may run again), a refusal is not retried."""
        client: Any = self.client()
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=name)
                return
            except ClientError as e:
                code = e.response["Error"]["Code"]
                if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    client.head_bucket(Bucket=name)  # ours, not another owner's
                    return
                if code in _REFUSALS or time.monotonic() > deadline:
                    raise RuntimeError(f"create bucket {name}: {e}\n{self.log_tail()}") from e
            except BotoCoreError as e:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"create bucket {name}: {e}\n{self.log_tail()}") from e
            time.sleep(0.5)

    def log_tail(self, chars: int = 4000) -> str:
        """The end of weed's log, for failure messages."""
        try:
            text = self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no weed log)"
        return f"--- {self.log} (tail) ---\n{text}"


_REFUSALS = frozenset(
    {"InvalidBucketName", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)


@dataclass
class S3Place:
    """Where one test may write: the server, a bucket (3-63 chars) and a prefix of its own."""

    server: WeedServer
    bucket: str
    prefix: str

    def settings(self, **overrides: object) -> S3Settings:
        """The tier's settings for this place (5 MiB parts: SeaweedFS's minimum, like S3's)."""
        values: dict[str, object] = {
            "endpoint_url": self.server.endpoint,
            "access_key_id": self.server.access_key,
            "secret_access_key": self.server.secret_key,
            "region": REGION,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "part_size": 5 * 1024 * 1024,
            "connect_timeout": 2.0,
            "read_timeout": 30.0,
        }
        return S3Settings.model_validate({**values, **overrides})

    def env(self) -> dict[str, str]:
        return {
            **self.server.env(),
            "TAPEDECK_S3_BUCKET": self.bucket,
            "TAPEDECK_S3_PREFIX": self.prefix,
        }


SHARED_BUCKET = "tapedeck-tests"
_shared: list[WeedServer] = []


def shared_s3_server() -> WeedServer:
    """The test process's one `weed mini`, started at first use (also from places that have no
    fixtures, like the conformance suite's store factories) and stopped at the session's end."""
    if not _shared:
        root = Path(tempfile.mkdtemp(prefix="tapedeck-weed-"))
        server = WeedServer(need_weed(), root)
        server.start()
        _shared.append(server)
        server.create_bucket(SHARED_BUCKET)
    return _shared[0]


def new_place() -> S3Place:
    """A fresh prefix in the shared bucket, so tests never see each other's keys."""
    return S3Place(shared_s3_server(), SHARED_BUCKET, f"t-{secrets.token_hex(6)}/")


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_s3_server() -> Iterator[None]:
    yield
    while _shared:
        server = _shared.pop()
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def s3_server() -> WeedServer:
    return shared_s3_server()


@pytest.fixture
def s3_place() -> S3Place:
    return new_place()


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[WeedServer]:
    """A `weed mini` of this test's own, which the test may stop, kill and start again."""
    server = WeedServer(need_weed(), tmp_path / "weed")
    server.root.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()
