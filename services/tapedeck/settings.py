"""Configuration from `TAPEDECK_*` environment variables (SPEC §3)."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tapedeck.lifecycle import check_ttl

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: object) -> timedelta:
    """Accept `90`, `90s`, `5m`, `24h`, `1h30m` (Kubernetes/Go style) or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return _seconds(value, str(value))
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _seconds(float(text), text)
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 5m, 24h)")
    return _seconds(total, text)


def _seconds(seconds: float, text: str) -> timedelta:
    """A timedelta, or a ValueError (which validation reports) where one cannot hold it."""
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"duration out of range: {text[:40]!r}") from None


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAPEDECK_", extra="ignore")

    mode: Literal["embedded", "cluster"] = "embedded"
    data_dir: Path = Path("recordings")
    host: str = "127.0.0.1"
    port: int = 8000
    storage_addr: str = "127.0.0.1:50051"
    storage_addrs: Annotated[list[str], NoDecode] = []
    """Several storage replicas (issue 15): their addresses, comma-separated, in replica order
    (index 0 first; e.g. the StatefulSet's `storage-0.storage:50051,...`). Empty: one replica,
    `storage_addr`. Never reorder or shrink it: a session's owner is recorded by index."""
    storage_replica: int = Field(default=0, ge=0)
    """A storage process's own index among the replicas, recorded in the manifests it creates
    (the chart passes the StatefulSet's pod index)."""
    storage_metrics_port: int = 0
    storage_min_free_bytes: int = Field(default=0, ge=0)
    """A storage replica with less free space than this refuses new sessions (StorageFull; the
    api places them on another replica, or answers 503 + Retry-After when all are full);
    sessions already recording keep writing into the reserve. 0: never refuse (the chart sets
    1 GiB)."""
    session_ttl: Duration = timedelta(hours=24)
    idle_finalize: Duration = timedelta(minutes=5)
    sweep_interval: Duration = timedelta(seconds=30)
    api_token: str | None = None
    allow_anonymous: bool = False
    """Cluster mode: serve /api without TAPEDECK_API_TOKEN (the chart's auth.allowAnonymous);
    without it the api refuses to start. Embedded mode has its own rule: loopback only."""
    secret_key: str | None = None
    upload_token_ttl: Duration = timedelta(hours=24)
    max_frame_bytes: int = 8 * MiB
    max_session_bytes: int = 16 * 1024 * MiB
    max_inflight_bytes: int = 16 * MiB
    ws_implementation: Literal["wsproto", "websockets-sansio"] = "wsproto"
    """uvicorn's WebSocket protocol for /ws (docs/performance.md compares them)."""
    receive_pool_bytes: int = 0
    """Frames an ingest process holds unacknowledged across all its streams before every
    stream stops reading (0: no bound; ingest/pool.py). Off by default: a pool that stays
    full longer than uvicorn's keepalive ping timeout (20 s) gets sockets closed with 1011
    (docs/performance.md: 183 of 300 streams in an overloaded reconnect storm)."""
    socket_idle_timeout: Duration = timedelta(seconds=60)
    """A media socket that sends nothing this long while it owes nothing is closed (4408),
    so its session stops `writing` and can be finalized; MediaRecorder sends every second."""
    drain_timeout: Duration = timedelta(seconds=20)
    """On SIGTERM, how long ingest waits for storage to acknowledge what its sockets sent before
    it closes them with 1012 (the chart's `terminationGracePeriodSeconds` is this plus 10 s)."""
    ingest_max_streams: int = Field(default=200, ge=0)
    """Media sockets one ingest process takes at once; more are refused with 1013 (0: no limit).
    200 is two thirds of the 300 streams docs/performance.md measured on 2 shared cores."""
    ffmpeg: str | None = None
    compile_concurrency: int = 1
    compile_max_attempts: int = 3
    compile_timeout: Duration = timedelta(hours=2)
    hls_min_duration: Duration = timedelta(minutes=10)
    """A compile also writes HLS (fMP4) for recordings at least this long (0: always), unless
    the compile says otherwise (`spec.output.hls`); docs/decisions.md says why 10 minutes."""
    frontend_dir: Path | None = None

    # Doors (docs/security.md).
    allowed_hosts: Annotated[list[str], NoDecode] = []
    """Host names the UI, /api and /ws answer to besides localhost and IP literals
    (comma-separated; `.example.com` for a domain and its subdomains; `*` for any)."""
    allowed_origins: Annotated[list[str], NoDecode] = []
    """Origins allowed to open WebSockets besides the page's own (comma-separated, or `*`)."""
    cors_origins: Annotated[list[str], NoDecode] = []
    """Origins allowed to call /api from other sites; empty: CORS off."""
    max_open_sessions: int = 1000
    """Sessions that may be `recording` at once; more are refused until some finish."""
    sessions_per_minute: int = 60
    """New sessions per client address per minute (0: unlimited)."""
    trusted_proxies: Annotated[list[str], NoDecode] = []
    """Reverse proxies (addresses or CIDRs, comma-separated, or `*`) whose X-Forwarded-For
    names the client; empty: the TCP peer is the client, and the header is ignored."""

    s3_bucket: str = ""
    """The object tier's bucket (issue 15); empty: recordings stay on the volume
    (storage/backend.py `open_backend`)."""

    # Webhooks (docs/api.md "Webhooks").
    webhook_url: Annotated[list[str], NoDecode] = []
    """Endpoints that get every event (comma-separated); empty: no outbox, no deliveries."""
    webhook_secret: str | None = None
    """The Standard Webhooks `whsec_...` signing secret; unset: generated and kept in
    `{data_dir}/.tapedeck-webhook-secret` (`tapedeck webhook-secret` prints it)."""
    webhook_deliverer: Literal["auto", "web", "operator", "off"] = "auto"
    """Which process delivers (exactly one per deployment): `auto` is the web process in
    embedded mode and the operator in cluster mode."""
    webhook_backoff_base: Duration = timedelta(seconds=5)
    webhook_backoff_max: Duration = timedelta(hours=1)
    webhook_retry_for: Duration = timedelta(hours=25)
    """How long a failing delivery is retried (at least 24 h by default) before it is given up."""
    webhook_timeout: Duration = timedelta(seconds=10)
    webhook_poll_interval: Duration = timedelta(seconds=1)
    webhook_outbox_max: int = 100_000
    """Pending events storage keeps at most (the oldest go first, with a warning)."""
    public_url: str = ""
    """The base URL of this deployment as receivers reach it (the download links in
    `compile.ready`); default `http://{host}:{port}`."""

    def public_base(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def webhook_delivered_by(self) -> Literal["web", "operator", "off"]:
        """`web`, `operator` or `off`: who delivers webhooks in this deployment."""
        if not self.webhook_url or self.webhook_deliverer == "off":
            return "off"
        if self.webhook_deliverer == "auto":
            return "web" if self.mode == "embedded" else "operator"
        return self.webhook_deliverer

    @field_validator("webhook_url")
    @classmethod
    def _http_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
                raise ValueError(f"not an http(s) URL: {url[:100]!r}")
        return value

    @field_validator("session_ttl")
    @classmethod
    def _bounded_ttl(cls, value: timedelta) -> timedelta:
        check_ttl(value.total_seconds())
        return value

    def replica_addrs(self) -> list[str]:
        """Every storage replica's address, index 0 first."""
        return list(self.storage_addrs) or [self.storage_addr]

    @field_validator(
        "allowed_hosts",
        "allowed_origins",
        "cors_origins",
        "trusted_proxies",
        "webhook_url",
        "storage_addrs",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    # Cluster mode (the api's RecordingSession hooks, and the operator).
    namespace: str | None = None
    """Where RecordingSessions and compile Jobs live; default: the pod's own namespace."""
    instance: str = Field(
        default="", max_length=63, pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
    )
    """The Helm release (`app.kubernetes.io/instance`) the operator labels its compile Jobs and
    pods with, so that release's NetworkPolicies select its own compile pods and not those of
    another release in the namespace. Empty: no such label (the chart always sets it)."""
    compile_image: str = "tapedeck-compile:0.1.0"
    compile_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    compile_resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    }
    """A Kubernetes `resources` block for compile pods (JSON in TAPEDECK_COMPILE_RESOURCES)."""
    compile_scratch_size: str = "10Gi"
    """Size limit of the compile pod's /tmp (an emptyDir): the tracks are copied there."""
    compile_job_ttl: Duration = timedelta(hours=1)
    """How long a finished compile Job (and its pod's log) is kept."""
    operator_followers_max: int = Field(default=20, ge=0)
    """Cluster mode: recording sessions compiled while they record, one follower Job each, at
    most this many at once per namespace (0: none; every compile is a one-shot Job)."""
    follower_resources: dict[str, dict[str, str]] = {
        "requests": {"cpu": "50m", "memory": "320Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    """The follower pods' `resources` (JSON in TAPEDECK_FOLLOWER_RESOURCES); docs/decisions.md
    measured ~3 % of a core and ~260 MiB per live H.264 recording."""
    follower_timeout: Duration = timedelta(hours=6, minutes=30)
    """A follower Job's `activeDeadlineSeconds`: the longest recording it follows, plus the
    idle finalization and its wait for a compile request."""
    operator_liveness: str = "http://0.0.0.0:8080/healthz"
    operator_metrics_port: int = 0
    """The operator's /metrics (compile queue, running, durations, outcomes from the compile
    Jobs); 0: none. The chart sets 9090."""
    speculative_compiles: int = 2
    """Embedded mode: recordings compiled while they record, at most this many at once
    (0: compile only when asked). See compiler/follow.py."""

    scratch_dir: Path | None = None
    """Where compiles and followers copy a session's tracks, one directory per run that the
    embedded worker removes whatever ends the run (compiler/scratch.py). Default:
    `tapedeck-scratch-UID` in the system's temporary directory ($TMPDIR, else /tmp)."""

    def scratch_root(self) -> Path:
        """`scratch_dir`, else the default (computed late: TMPDIR is the process's own)."""
        if self.scratch_dir is not None:
            return self.scratch_dir
        return Path(tempfile.gettempdir()) / f"tapedeck-scratch-{os.getuid()}"

    def ffmpeg_path(self) -> str:
        """FFmpeg from TAPEDECK_FFMPEG, else PATH, else the imageio-ffmpeg wheel's binary."""
        if self.ffmpeg:
            return self.ffmpeg
        found = shutil.which("ffmpeg")
        if found:
            return found
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())


@lru_cache
def get_settings() -> Settings:
    return Settings()


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3Settings(BaseSettings):
    """The object tier (docs/storage.md), configured by the AWS conventions plus
    `TAPEDECK_S3_*`. Unset `TAPEDECK_S3_BUCKET`: no tier, local files only. Unset keys: botocore's
    own credential chain (IRSA / workload identity, profiles)."""

    model_config = SettingsConfigDict(
        env_prefix="TAPEDECK_S3_", extra="ignore", populate_by_name=True
    )

    endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    access_key_id: SecretStr | None = Field(default=None, validation_alias="AWS_ACCESS_KEY_ID")
    secret_access_key: SecretStr | None = Field(
        default=None, validation_alias="AWS_SECRET_ACCESS_KEY"
    )
    region: str = Field(
        default="us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    bucket: str | None = None
    prefix: str = ""
    """Keys start with it (`tapedeck/`: a slash is added when missing)."""
    public_endpoint: str | None = None
    """Where browsers reach the store, for presigned URLs (default: AWS_ENDPOINT_URL)."""
    addressing_style: Literal["path", "virtual", "auto"] = "path"
    checksum: Literal["when_required", "when_supported"] = "when_required"
    """`when_supported` sends CRC checksums on every request, which not every S3-compatible
    store accepts; `when_required` only where the API demands one."""
    part_size: int = 8 * MiB
    """Tracks ship as multipart uploads of equal parts this size (the last one smaller)."""
    volume_tail: int = 16 * MiB
    """Shipped bytes of a live track the volume still keeps (for readers that lag behind, like
    the embedded speculative compiles); older ones are punched out of the file."""
    lifecycle_days: int = 0
    """When > 0, storage sets the bucket's rule that aborts multipart uploads abandoned this
    many days (the rule covers TAPEDECK_S3_PREFIX); 0: leave the bucket's rules alone."""
    downloads: Literal["proxy", "redirect"] = "proxy"
    """`redirect`: `GET /api/download/{id}` answers 307 to a presigned GET of the store (signed
    for `public_endpoint`), so the api moves no media bytes; `proxy`: the api streams the MP4
    (for stores browsers cannot reach)."""
    download_expiry: int = 300
    """Seconds a presigned download URL stays valid."""
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.fullmatch(value):
            raise ValueError(f"not an S3 bucket name: {value[:70]!r} (3-63 of a-z, 0-9, '.', '-')")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @field_validator("part_size")
    @classmethod
    def _part_size(cls, value: int) -> int:
        if not 64 * 1024 <= value <= 5 * 1024 * MiB:
            raise ValueError("part size must be between 64 KiB and 5 GiB (S3 wants >= 5 MiB)")
        return value
