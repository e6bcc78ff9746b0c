"""Prometheus metrics, one place for every service so names stay consistent."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# storage
storage_active_writes = Gauge("tapedeck_storage_active_writes", "Open Write streams")
storage_bytes_committed = Counter(
    "tapedeck_storage_bytes_committed_total", "Bytes made durable", ["object"]
)
storage_fsync_seconds = Histogram(
    "tapedeck_storage_fsync_seconds",
    "Time of one group commit (write + fsync)",
    buckets=LATENCY_BUCKETS,
)
storage_sessions = Gauge("tapedeck_storage_sessions", "Sessions known to storage")
storage_free_bytes = Gauge(
    "tapedeck_storage_free_bytes",
    "Free bytes on the replica's volume (to an unprivileged writer), read at each scrape",
    ["replica"],
)

# ingest
ingest_active_streams = Gauge("tapedeck_ingest_active_streams", "Open WebSocket media streams")
ingest_bytes_received = Counter(
    "tapedeck_ingest_bytes_received_total", "Media bytes received over WebSocket", ["track"]
)
ingest_bytes_committed = Counter(
    "tapedeck_ingest_bytes_committed_total", "Media bytes acknowledged to clients", ["track"]
)
ingest_ack_latency = Histogram(
    "tapedeck_ingest_ack_latency_seconds",
    "From a frame's arrival to its ack",
    buckets=LATENCY_BUCKETS,
)
ingest_closes = Counter("tapedeck_ingest_closes_total", "WebSocket closes by code", ["code"])

# compile: the embedded worker's, and in a cluster the operator's, from the compile Jobs' status
compile_queue_depth = Gauge("tapedeck_compile_queue_depth", "Compiles waiting for a worker")
compile_running = Gauge("tapedeck_compile_running", "Compiles running")
compile_duration = Histogram(
    "tapedeck_compile_duration_seconds",
    "Compile wall time",
    ["outcome"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
compile_outcomes = Counter("tapedeck_compile_total", "Compiles by outcome", ["outcome"])

# webhooks (the deliverer's process)
webhook_deliveries = Counter(
    "tapedeck_webhook_deliveries_total",
    "Webhook deliveries settled, by outcome (delivered, or failed once retries ran out)",
    ["outcome"],
)
webhook_failed_attempts = Counter(
    "tapedeck_webhook_failed_attempts_total", "Webhook delivery attempts that got no 2xx"
)
webhook_pending = Gauge(
    "tapedeck_webhook_pending", "Webhook deliveries not yet settled (known to the deliverer)"
)
webhook_outbox_events = Gauge(
    "tapedeck_webhook_outbox_events", "Events in storage's webhook outbox (storage's process)"
)
