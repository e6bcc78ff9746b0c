"""Storage reports its volume's free space per replica, for the dashboard and alerts."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness import free_port, make_stack, wait_for


def test_free_bytes_per_replica_on_the_metrics_port(tmp_path: Path) -> None:
    port = free_port()
    stack = make_stack(tmp_path, storage_metrics_port=str(port), storage_replica="3")
    try:
        stack.start_storage()
        url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: httpx.get(url).status_code == 200, what="storage /metrics")
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(url).text)}
        samples = families["tapedeck_storage_free_bytes"].samples
        assert [s.labels for s in samples] == [{"replica": "3"}]
        usage = shutil.disk_usage(stack.data_dir)
        assert 0 < samples[0].value <= usage.total
    finally:
        stack.stop()


def test_free_bytes_of_a_missing_volume_is_no_number(tmp_path: Path) -> None:
    from tapedeck.storage.server import free_bytes

    assert free_bytes(tmp_path) > 0
    assert free_bytes(tmp_path / "gone") != free_bytes(tmp_path / "gone")  # NaN
